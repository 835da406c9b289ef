/* descend serve: draw a digit (or upload an image), see what the network sees and what it answers.
 * Plain JavaScript, no library, nothing fetched but this server's own /model and /predict. */
(function () {
  "use strict";
  const P = window.DescendPreprocess;
  const $ = function (id) { return document.getElementById(id); };

  // Shared with tests (and the curious): drawn counts canvas changes, shown the last one predicted.
  const state = window.descend = {
    model: null, shape: null, drawn: 0, shown: 0, inflight: false, error: null,
    lastInk: null, lastInput: null, lastResponse: null,
    idle: function () { return state.model !== null && !state.inflight && state.shown === state.drawn; },
  };

  // ------------------------------------------------------------------ model and layout
  function summary(m) {
    const parts = [];
    const ds = m.dataset && m.dataset.name ? m.dataset.name : "custom data";
    const hidden = m.spec && m.spec.hidden && m.spec.hidden.length ? m.spec.hidden.join("-") + " hidden" : "logistic regression";
    parts.push("Model: " + hidden + (m.spec && m.spec.activation ? " " + m.spec.activation : "") + ", trained on " + ds);
    if (m.metrics && typeof m.metrics.test_error === "number") parts.push("test error " + (100 * m.metrics.test_error).toFixed(2) + "%");
    else if (m.metrics && typeof m.metrics.valid_error === "number") parts.push("validation error " + (100 * m.metrics.valid_error).toFixed(2) + "%");
    parts.push(m.classes.length + " classes");
    return parts.join(" · ");
  }

  function buildBars(classes) {
    const bars = $("bars");
    bars.textContent = "";
    classes.forEach(function (name, i) {
      const row = document.createElement("div");
      row.className = "bar";
      row.dataset.index = String(i);
      const label = document.createElement("span");
      label.className = "name";
      label.textContent = name;
      const track = document.createElement("span");
      track.className = "track";
      const fill = document.createElement("span");
      fill.className = "fill";
      track.appendChild(fill);
      const pct = document.createElement("span");
      pct.className = "pct";
      pct.textContent = "–";
      row.append(label, track, pct);
      bars.appendChild(row);
    });
  }

  function showBars(probs) {
    const rows = $("bars").children;
    let best = -1;
    if (probs) best = probs.indexOf(Math.max.apply(null, probs));
    for (let i = 0; i < rows.length; i++) {
      const p = probs ? probs[i] : 0;
      rows[i].querySelector(".fill").style.width = (100 * p).toFixed(1) + "%";
      rows[i].querySelector(".pct").textContent = probs ? (100 * p).toFixed(1) + "%" : "–";
      rows[i].classList.toggle("best", i === best);
    }
  }

  function showLabel(text, confidence) {
    $("label").textContent = text;
    $("confidence").textContent = confidence === null ? "" : (100 * confidence).toFixed(1) + "% sure";
  }

  function showSeen(input) {
    const seen = $("seen"), ctx = seen.getContext("2d");
    const w = seen.width, h = seen.height, img = ctx.createImageData(w, h);
    for (let i = 0; i < w * h; i++) {
      const v = input ? Math.round(Math.min(255, Math.max(0, input[i]))) : 0;
      img.data[4 * i] = img.data[4 * i + 1] = img.data[4 * i + 2] = v;
      img.data[4 * i + 3] = 255;
    }
    ctx.putImageData(img, 0, 0);
  }

  function setStatus(text, isError) {
    const s = $("status");
    s.textContent = text;
    s.classList.toggle("error", !!isError);
  }

  // ------------------------------------------------------------------ predictions
  let pendingInput = null;  // {version, input} waiting for the request in flight to finish

  function request(version, input) {
    state.inflight = true;
    const body = JSON.stringify({ images: [Array.from(input, function (v) { return Math.round(v * 1000) / 1000; })] });
    fetch("predict", { method: "POST", headers: { "Content-Type": "application/json" }, body: body })
      .then(function (r) {
        return r.json().then(function (j) { return { ok: r.ok, status: r.status, json: j }; });
      })
      .then(function (res) {
        if (!res.ok) throw new Error(res.status + ": " + (res.json && res.json.detail));
        if (version >= state.shown && version === state.drawn) {
          if (res.json.classes.join("\n") !== state.model.classes.join("\n")) {
            state.model.classes = res.json.classes;  // the model file was replaced by one with other classes
            buildBars(res.json.classes);
          }
          const probs = res.json.probabilities[0];
          state.lastResponse = res.json;
          showBars(probs);
          showLabel(res.json.labels[0], Math.max.apply(null, probs));
          setStatus("model generation " + res.json.model.generation + " · sha256 " + res.json.model.sha256.slice(0, 12), false);
        }
        state.error = null;
      })
      .catch(function (e) {
        state.error = String(e.message || e);
        setStatus("prediction failed: " + state.error, true);
      })
      .then(function () {
        state.shown = Math.max(state.shown, version);
        state.inflight = false;
        if (pendingInput) {
          const next = pendingInput;
          pendingInput = null;
          request(next.version, next.input);
        }
      });
  }

  function predict(input) {
    state.lastInput = input;
    showSeen(input);
    const version = state.drawn;
    if (state.inflight) pendingInput = { version: version, input: input };
    else request(version, input);
  }

  function reset() {
    pendingInput = null;
    state.lastInput = null;
    state.lastInk = null;
    showSeen(null);
    showBars(null);
    showLabel("–", null);
    state.shown = state.drawn;
  }

  // ------------------------------------------------------------------ drawing
  function setupPad() {
    const pad = $("pad"), ctx = pad.getContext("2d", { willReadFrequently: true });
    let drawing = false, last = null, scheduled = false;

    function pos(e) {
      const r = pad.getBoundingClientRect();
      return { x: (e.clientX - r.left) * pad.width / r.width, y: (e.clientY - r.top) * pad.height / r.height };
    }
    function dot(p) {
      ctx.beginPath();
      ctx.arc(p.x, p.y, ctx.lineWidth / 2, 0, 2 * Math.PI);
      ctx.fill();
    }
    function line(a, b) {
      ctx.beginPath();
      ctx.moveTo(a.x, a.y);
      ctx.lineTo(b.x, b.y);
      ctx.stroke();
    }
    function changed() {
      state.drawn++;
      if (!scheduled) { scheduled = true; requestAnimationFrame(update); }
    }
    function update() {
      scheduled = false;
      // Ink is the canvas' alpha: strokes are drawn on a transparent canvas over a white background.
      const data = ctx.getImageData(0, 0, pad.width, pad.height).data;
      const ink = new Float64Array(pad.width * pad.height);
      let any = false;
      for (let i = 0; i < ink.length; i++) { ink[i] = data[4 * i + 3]; if (ink[i] > 0) any = true; }
      if (!any) { reset(); return; }
      state.lastInk = ink;
      predict(P.mnistPreprocess(ink, pad.width, pad.height, 20, 28));
    }

    ctx.lineWidth = 20;
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    ctx.strokeStyle = ctx.fillStyle = "#000";

    pad.addEventListener("pointerdown", function (e) {
      if (e.button !== undefined && e.button > 0) return;
      e.preventDefault();
      if (pad.setPointerCapture) { try { pad.setPointerCapture(e.pointerId); } catch (err) { /* synthetic */ } }
      drawing = true;
      last = pos(e);
      dot(last);
      changed();
    });
    pad.addEventListener("pointermove", function (e) {
      if (!drawing) return;
      e.preventDefault();
      const events = e.getCoalescedEvents ? e.getCoalescedEvents() : [];
      (events.length ? events : [e]).forEach(function (ev) {
        const p = pos(ev);
        line(last, p);
        last = p;
      });
      changed();
    });
    function end(e) {
      if (!drawing) return;
      drawing = false;
      last = null;
      changed();
    }
    pad.addEventListener("pointerup", end);
    pad.addEventListener("pointercancel", end);
    pad.addEventListener("lostpointercapture", end);
    pad.addEventListener("touchstart", function (e) { e.preventDefault(); }, { passive: false });

    $("clear").addEventListener("click", function () {
      ctx.clearRect(0, 0, pad.width, pad.height);
      state.drawn++;
      reset();
      setStatus("", false);
    });
  }

  // ------------------------------------------------------------------ uploads (any image model)
  function setupUpload() {
    const input = $("upload");
    input.addEventListener("change", function () {
      const file = input.files && input.files[0];
      if (!file) return;
      const url = URL.createObjectURL(file);
      const img = new Image();
      img.onload = function () {
        const preview = $("upload-preview");
        preview.src = url;
        preview.hidden = false;
        // Large photos are reduced first: the model sees at most 48x48 anyway.
        const scale = Math.min(1, 1024 / Math.max(img.naturalWidth, img.naturalHeight));
        const w = Math.max(1, Math.round(img.naturalWidth * scale)), h = Math.max(1, Math.round(img.naturalHeight * scale));
        const c = document.createElement("canvas");
        c.width = w; c.height = h;
        const ctx = c.getContext("2d", { willReadFrequently: true });
        ctx.fillStyle = "#fff";  // transparent = white paper, as on the server
        ctx.fillRect(0, 0, w, h);
        ctx.drawImage(img, 0, 0, w, h);
        const data = ctx.getImageData(0, 0, w, h).data, gray = new Float64Array(w * h);
        for (let i = 0; i < w * h; i++) gray[i] = (data[4 * i] * 299 + data[4 * i + 1] * 587 + data[4 * i + 2] * 114) / 1000;
        state.drawn++;
        predict(P.imageToInput(gray, w, h, state.shape, "auto").input);
      };
      img.onerror = function () { setStatus("cannot read " + file.name + " as an image", true); URL.revokeObjectURL(url); };
      img.src = url;
    });
  }

  // ------------------------------------------------------------------ start
  fetch("model")
    .then(function (r) { if (!r.ok) throw new Error("GET /model: " + r.status); return r.json(); })
    .then(function (m) {
      $("model-summary").textContent = summary(m);
      buildBars(m.classes);
      showBars(null);
      if (!m.image_shape) {
        $("no-image").hidden = false;
        state.model = m;
        return;
      }
      state.shape = m.image_shape;
      $("seen").width = m.image_shape[1];
      $("seen").height = m.image_shape[0];
      $("seen-size").textContent = m.image_shape[1] + "x" + m.image_shape[0];
      showSeen(null);
      if (m.image_shape[0] === 28 && m.image_shape[1] === 28) {
        $("draw-panel").hidden = false;
        setupPad();
        $("upload-title").textContent = "…or upload a picture of a digit";
      } else {
        $("upload-title").textContent = "Upload a face (it is cropped to a square and resized to " +
          m.image_shape[1] + "x" + m.image_shape[0] + " grayscale)";
      }
      $("upload-panel").hidden = false;
      setupUpload();
      state.model = m;
    })
    .catch(function (e) { setStatus(String(e.message || e), true); });
})();
