"""``descend search``: grid, random, hill-climbing and TPE search with K-fold cross-validation."""

from descend.experiments.search.study import (DEFAULT_TRIALS, METHODS, METRICS, PRUNERS, SearchConfig, SearchResult,
                                              parse_space, run_search, tickets)

__all__ = ["DEFAULT_TRIALS", "METHODS", "METRICS", "PRUNERS", "SearchConfig", "SearchResult", "parse_space",
           "run_search", "tickets"]
