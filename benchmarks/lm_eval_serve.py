"""lm-eval against `datawall serve` on a benchmark JSONL file: local-completions (plain prompts) and
local-chat-completions (the chat template rendered by the server), greedy, lm-eval's GSM8K strict-match and
flexible-extract filters. docs/real_models.md's step 5.
Run: .venv/bin/python benchmarks/lm_eval_serve.py MODEL_DIR FILE.jsonl OUT_DIR [PROBLEMS]
"""
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"
from datawall.data.tokenizer import Tokenizer  # noqa: E402
from datawall.tasks import get_task  # noqa: E402
from datawall.train.evaluate import solution_budget  # noqa: E402

MODEL, DATA, OUT = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
OUT.mkdir(parents=True, exist_ok=True)
task = get_task(f"jsonl:{DATA}", split="all")
problems = task.problems("test", min(int(sys.argv[4]) if len(sys.argv) > 4 else 200, task.size("test")))
max_new = solution_budget(task, Tokenizer.load(MODEL), problems)
print("max_gen_toks", max_new, flush=True)
(OUT / "gsm.jsonl").write_text("".join(json.dumps({"prompt": p.prompt, "answer": p.answer}) + "\n" for p in problems))
(OUT / "gsm_dw.yaml").write_text(f"""task: gsm_dw
dataset_path: json
dataset_kwargs:
  data_files:
    test: {OUT / 'gsm.jsonl'}
test_split: test
output_type: generate_until
doc_to_text: "{{{{prompt}}}}"
doc_to_target: "{{{{answer}}}}"
target_delimiter: ""
generation_kwargs:
  until: ["\\n\\nQuestion:"]
  do_sample: false
  temperature: 0.0
  max_gen_toks: {max_new}
filter_list:
  - name: strict-match
    filter:
      - function: regex
        regex_pattern: "#### (\\\\-?[0-9\\\\.\\\\,]+)"
      - function: take_first
  - name: flexible-extract
    filter:
      - function: regex
        group_select: -1
        regex_pattern: "(-?[$0-9.,]{{2,}})|(-?[0-9]+)"
      - function: take_first
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
    ignore_case: true
    ignore_punctuation: false
    regexes_to_ignore: [",", "\\\\$", "(?s).*#### ", "\\\\.$"]
metadata:
  version: 1.0
""")
import lm_eval  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

server = subprocess.Popen([sys.executable, "-m", "datawall.cli", "serve", str(MODEL), "--port", "8765",
                           "--model-name", "smollm2"], stderr=open(OUT / "serve.log", "w"))
try:
    for _ in range(120):
        try:
            urllib.request.urlopen("http://127.0.0.1:8765/health")
            break
        except Exception:
            time.sleep(1)
    manager = TaskManager(include_path=str(OUT))
    results = {}
    for model, url, chat in (("local-completions", "completions", False),
                             ("local-chat-completions", "chat/completions", True)):
        t0 = time.perf_counter()
        args = (f"model=smollm2,base_url=http://127.0.0.1:8765/v1/{url},tokenized_requests=False,"
                "tokenizer_backend=None,num_concurrent=16,max_retries=1")
        out = lm_eval.simple_evaluate(model=model, model_args=args, tasks=["gsm_dw"], task_manager=manager,
                                      batch_size=1, log_samples=True, apply_chat_template=chat)
        r = out["results"]["gsm_dw"]
        samples = sorted(out["samples"]["gsm_dw"], key=lambda s: s["doc_id"])
        results[model] = {"strict": r["exact_match,strict-match"], "flexible": r["exact_match,flexible-extract"],
                          "strict_stderr": r["exact_match_stderr,strict-match"],
                          "flexible_stderr": r["exact_match_stderr,flexible-extract"],
                          "seconds": time.perf_counter() - t0,
                          "responses": [s["resps"][0][0] for s in samples]}
        print(model, {k: v for k, v in results[model].items() if k != "responses"}, flush=True)
    (OUT / "results.json").write_text(json.dumps(results))
finally:
    server.terminate()
    server.wait()
