"""Hyper-parameter search of the student: a space file (space), one trial (trial), the Ray Tune driver (runner),
what a search leaves behind (results), and native W&B sweeps of the same space (sweep). See docs/tuning.md."""
