"""`python -m lakd.data.synth`: the rendering worker (specs on stdin, rendered chunk on stdout; see render.py)."""

from lakd.data.synth.render import worker_main

worker_main()
