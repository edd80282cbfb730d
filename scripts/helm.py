#!/usr/bin/env python3
"""Lints or renders the Helm chart with the Helm engine (helm-python-sdk), for tests.

    helm.py lint CHART_DIR VALUES_JSON
    helm.py render CHART_DIR VALUES_JSON RELEASE NAMESPACE

Prints JSON: the lint report, or {template path: rendered manifest}.
"""
import json
import sys

import helm_python as helm


def main(argv):
    command, chart, values = argv[1], argv[2], json.loads(argv[3])
    if command == "lint":
        report = helm.lint(chart, values, strict=True, kube_version="v1.33.0")
        print(json.dumps(report))
    elif command == "render":
        release, namespace = argv[4], argv[5]
        rendered = helm.Chart.load(chart).render(
            values, name=release, namespace=namespace, is_install=True
        )
        print(json.dumps(rendered))
    else:
        sys.exit(f"unknown command {command}")


if __name__ == "__main__":
    try:
        main(sys.argv)
    except helm.HelmError as e:
        print(f"helm: {e}", file=sys.stderr)
        sys.exit(1)
