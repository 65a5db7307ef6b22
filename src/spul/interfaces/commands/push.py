"""``spul push ARTIFACT --repo OWNER/NAME``: share an artifact on the Hugging Face hub (or ``--to-dir`` a folder).

    spul push runs/quickstart/artifact --repo my-org/quickstart-forget         # private hub repo
    spul push runs/quickstart/artifact --repo my-org/quickstart-forget --to-dir /shared/models
"""

from __future__ import annotations


def cmd_push(args) -> int:
    from spul.hub import HubTarget, LocalTarget, push_artifact

    target = LocalTarget(args.to_dir) if args.to_dir else HubTarget(token=args.token, endpoint=args.endpoint, revision=args.revision)
    result = push_artifact(args.artifact, args.repo, target, private=not args.public)
    print(f"pushed {len(result['files'])} files to {result['repo']}: {result['url']}")
    return 0


def register(subparsers) -> None:
    help_text = "upload an artifact (adapter, spul.json, model card) to a Hugging Face hub repo, or to a local folder"
    p = subparsers.add_parser("push", help=help_text, description=help_text)
    p.add_argument("artifact", help="artifact folder (e.g. runs/quickstart/artifact)")
    p.add_argument("--repo", required=True, help="hub repo id OWNER/NAME (created if missing)")
    p.add_argument("--public", action="store_true", help="create the repo public (default: private)")
    p.add_argument("--token", default=None, help="hub token (default: HF_TOKEN or the `hf auth login` token)")
    p.add_argument("--revision", default=None, help="branch to push to (default: main)")
    p.add_argument("--endpoint", default=None, help="hub endpoint (default: HF_ENDPOINT or huggingface.co)")
    p.add_argument("--to-dir", default=None, metavar="DIR", help="instead of the hub: write DIR/OWNER/NAME (offline sharing, tests)")
    p.add_argument("-v", "--verbose", action="store_true", help="show library logs and full tracebacks")
    p.set_defaults(func=cmd_push)
