"""Shared test set-up: quiet OneFlow's start-up logging before any test imports it."""
import os

os.environ.setdefault("GLOG_minloglevel", "3")
