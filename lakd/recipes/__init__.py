"""One readable recipe per job. Each `run(...)` takes a Config and writes into cfg.run_dir.

Run-directory layout (every recipe agrees on it; `lakd status` reads it):

    run_dir/config.yaml            the resolved config
    run_dir/data/{train,dev,test}  synthesized shards (only when the config asks for synthesis)
    run_dir/teachers/<lang>/       one fine-tuned teacher per language (best/ last/ state/ metrics.jsonl)
    run_dir/cache/                 teacher knowledge (logits + pooled embeddings per sample key)
    run_dir/student/               the distilled student
    run_dir/eval/<model>/          reports: JSON, markdown, confusion matrices
    run_dir/stages/<stage>/        launcher state (state.json, done.json, logs)
"""
