/* MNIST-style preprocessing, the same algorithm and arithmetic as descend/serve/preprocess.py.
 *
 * All images are Float64Arrays of 0..255 values, row-major, with explicit width and height.
 * mnistPreprocess: crop to the ink's bounding box, area-resize so the longer side is 20 pixels
 * (aspect kept), paste into a 28x28 black field with the centre of mass at the centre (whole-pixel
 * shift): white ink on black, as MNIST.  A test runs this in Chromium and compares with Python.
 */
(function (root) {
  "use strict";

  function round(x) { return Math.floor(x + 0.5); }  // half up, like the Python side's _round

  // Sparse rows of the (nOut x nIn) area-averaging matrix: output j averages input [j f, (j+1) f).
  function areaWeights(nIn, nOut) {
    const f = nIn / nOut, rows = [];
    for (let j = 0; j < nOut; j++) {
      const lo = j * f, hi = (j + 1) * f, start = Math.floor(lo), end = Math.min(Math.ceil(hi), nIn);
      const w = [];
      for (let k = start; k < end; k++) w.push((Math.min(hi, k + 1) - Math.max(lo, k)) / f);
      rows.push({ start: start, w: w });
    }
    return rows;
  }

  // Exact box-filter resampling of img (h x w) to (outH x outW): rows first, then columns.
  function areaResize(img, w, h, outW, outH) {
    const wx = areaWeights(w, outW), wy = areaWeights(h, outH);
    const tmp = new Float64Array(h * outW);
    for (let y = 0; y < h; y++) {
      for (let j = 0; j < outW; j++) {
        const r = wx[j];
        let s = 0;
        for (let t = 0; t < r.w.length; t++) s += img[y * w + r.start + t] * r.w[t];
        tmp[y * outW + j] = s;
      }
    }
    const out = new Float64Array(outH * outW);
    for (let i = 0; i < outH; i++) {
      const r = wy[i];
      for (let j = 0; j < outW; j++) {
        let s = 0;
        for (let t = 0; t < r.w.length; t++) s += tmp[(r.start + t) * outW + j] * r.w[t];
        out[i * outW + j] = s;
      }
    }
    return out;
  }

  function median(values) {
    const a = Float64Array.from(values).sort(), n = a.length;
    return n % 2 ? a[(n - 1) / 2] : (a[n / 2 - 1] + a[n / 2]) / 2;
  }

  // Ink bright on dark: invert when the border's median is light (paper).
  function toInk(gray, w, h) {
    const border = [];
    for (let x = 0; x < w; x++) border.push(gray[x], gray[(h - 1) * w + x]);
    for (let y = 0; y < h; y++) border.push(gray[y * w], gray[y * w + w - 1]);
    if (median(border) <= 127.5) return Float64Array.from(gray);
    return Float64Array.from(gray, function (v) { return 255 - v; });
  }

  function mnistPreprocess(inkIn, w, h, box, size, threshold) {
    box = box || 20; size = size || 28; threshold = threshold === undefined ? 0.1 : threshold;
    const ink = Float64Array.from(inkIn, function (v) { return Math.min(255, Math.max(0, v)); });
    const out = new Float64Array(size * size);
    let peak = 0;
    for (let i = 0; i < ink.length; i++) if (ink[i] > peak) peak = ink[i];
    if (peak <= 0) return out;
    const cut = threshold * peak;
    let top = h, bottom = -1, left = w, right = -1;
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        if (ink[y * w + x] > cut) {
          if (y < top) top = y;
          if (y > bottom) bottom = y;
          if (x < left) left = x;
          if (x > right) right = x;
        }
      }
    }
    const bh = bottom + 1 - top, bw = right + 1 - left;
    const crop = new Float64Array(bh * bw);
    for (let y = 0; y < bh; y++) for (let x = 0; x < bw; x++) crop[y * bw + x] = ink[(top + y) * w + left + x];
    const s = box / Math.max(bh, bw);
    const oh = Math.max(1, round(bh * s)), ow = Math.max(1, round(bw * s));
    const small = areaResize(crop, bw, bh, ow, oh);
    let mass = 0, my = 0, mx = 0;
    for (let y = 0; y < oh; y++) {
      let rowSum = 0;
      for (let x = 0; x < ow; x++) rowSum += small[y * ow + x];
      my += rowSum * y;
      mass += rowSum;
    }
    for (let x = 0; x < ow; x++) {
      let colSum = 0;
      for (let y = 0; y < oh; y++) colSum += small[y * ow + x];
      mx += colSum * x;
    }
    const cy = my / mass, cx = mx / mass;
    const oy = round((size - 1) / 2 - cy), ox = round((size - 1) / 2 - cx);
    for (let y = Math.max(0, oy); y < Math.min(size, oy + oh); y++) {
      for (let x = Math.max(0, ox); x < Math.min(size, ox + ow); x++) {
        out[y * size + x] = Math.min(255, Math.max(0, small[(y - oy) * ow + (x - ox)]));
      }
    }
    return out;
  }

  // Largest centred crop with width / height == aspect: {img, w, h}.
  function centerCrop(img, w, h, aspect) {
    let x0 = 0, y0 = 0, cw = w, ch = h;
    if (w / h > aspect) { cw = Math.max(1, round(h * aspect)); x0 = Math.floor((w - cw) / 2); }
    else { ch = Math.max(1, round(w / aspect)); y0 = Math.floor((h - ch) / 2); }
    const out = new Float64Array(cw * ch);
    for (let y = 0; y < ch; y++) for (let x = 0; x < cw; x++) out[y * cw + x] = img[(y0 + y) * w + x0 + x];
    return { img: out, w: cw, h: ch };
  }

  // The model input for a grayscale image, as image_to_input in Python: {input, mode}.
  function imageToInput(gray, w, h, shape, mode) {
    const H = shape[0], W = shape[1];
    mode = mode || "auto";
    if (mode === "auto") mode = (w === W && h === H) ? "none" : (H === 28 && W === 28) ? "mnist" : "resize";
    if (mode === "none") return { input: Float64Array.from(gray), mode: mode };
    if (mode === "mnist") return { input: mnistPreprocess(toInk(gray, w, h), w, h, round(H * 20 / 28), H), mode: mode };
    const c = centerCrop(gray, w, h, W / H);
    return { input: areaResize(c.img, c.w, c.h, W, H), mode: mode };
  }

  const api = { areaResize: areaResize, toInk: toInk, mnistPreprocess: mnistPreprocess,
                centerCrop: centerCrop, imageToInput: imageToInput };
  if (typeof module !== "undefined" && module.exports) module.exports = api;
  else root.DescendPreprocess = api;
})(typeof window !== "undefined" ? window : this);
