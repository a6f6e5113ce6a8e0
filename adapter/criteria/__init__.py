"""Trial definition + facts → EligibilityReport. No I/O, no web: plain functions of their inputs."""
