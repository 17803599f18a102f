"""Template files copied into a Hugging Face export of a language-aware lakd model (transformers' custom-code
convention: `auto_map` in config.json, loaded with `trust_remote_code=True`). They import only torch and
transformers: the export runs where lakd is not installed. `lakd.export.hf` builds the model from them too,
so the exported code is the code that was checked against lakd.
"""

from pathlib import Path

TEMPLATE_DIR = Path(__file__).parent
TEMPLATE_FILES = ("configuration_lakd.py", "modeling_lakd.py", "pipeline_lakd.py")
