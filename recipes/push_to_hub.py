#!/usr/bin/env python
"""Push a finished run folder to the Hugging Face Hub (model card rewritten for the repo, ``checkpoints/``
left out).

    python recipes/push_to_hub.py output/train/<run> <user>/<repo> [--private] [--token hf_...]

The token comes from ``--token``, then ``HF_TOKEN``, then the saved login (``hf auth login``); it is sent in
the request header only and written to no file. ``HF_ENDPOINT`` points the upload at another Hub. Once
pushed, the model loads with ``timm.create_model("hf-hub:<user>/<repo>", pretrained=True)`` after
``import lt_registry``, or with ``lt_registry.hub.from_pretrained("hf-hub:<user>/<repo>")``.
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

parser = argparse.ArgumentParser(description="push an lt_registry run folder to the Hugging Face Hub")
parser.add_argument("run_dir", help="run folder written by recipes/train.py (config.json, model.safetensors, ...)")
parser.add_argument("repo_id", help="Hub repo id, user/name (created when missing)")
parser.add_argument("--private", action="store_true", help="create the repo as private")
parser.add_argument("--token", default=None, help="Hub token (default: HF_TOKEN, then the saved login)")
parser.add_argument("--commit-message", default=None)


def main(argv: Optional[List[str]] = None) -> int:
    args = parser.parse_args(argv)
    from lt_registry.hub import HubError, push_to_hub

    try:
        url = push_to_hub(args.run_dir, args.repo_id, private=args.private, token=args.token,
                          commit_message=args.commit_message)
    except HubError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"pushed {args.run_dir} to {url}")
    print(f'load it with: timm.create_model("hf-hub:{args.repo_id}", pretrained=True)  (after `import lt_registry`)')
    return 0


if __name__ == "__main__":
    sys.exit(main())
