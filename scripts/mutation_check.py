"""List the surviving mutants of a mutmut run and fail on any that is not explained.

Run by scripts/mutation.sh in its copy of the tree, after `mutmut run`:

    python scripts/mutation_check.py EQUIVALENT_LIST [--label NAME]

mutmut keeps each mutant as a function `x_<name>__mutmut_<n>` beside the original
`x_<name>__mutmut_orig` in mutants/<module>.py and its verdict in <module>.py.meta. A mutant's
number changes whenever its function changes, so a survivor is named here by what it changed:
`<module>:<function>: <mutated line>` (the first line of the mutated function that differs from
the original, as `ast.unparse` prints it). The equivalent list holds such names, each followed by
` # ` and the one-line reason the mutant cannot change behaviour.

One class of survivor is explained by rule rather than one by one: a mutant that changes only
the human text of an error or log message (the stable error code, the claim and the expected
value are the contract, and tests assert those).
"""

from __future__ import annotations

import argparse
import ast
import copy
import json
import re
import sys
from pathlib import Path

KILLED = {1, 3, 37}
SURVIVED = 0
NO_TESTS = {5, 33}
TIMEOUT = {24, -24, 36, 152, 255}
# Calls that take a human message, and the position of that message: TokenRejected and
# its helper take (code, claim, message, expected); exceptions take the message first; the
# callback's problem answers take (status, error, error_description, headers), its 401 helper
# the error_description alone (RFC 6749 §5.2: text for a developer; the status and the error
# code are the contract).
# The codec server's refusals take (status, message): the status is the contract, the line for a person.
MESSAGE_AT = {
    "_reject": 2,
    "TokenRejected": 2,
    "KeyNotFound": 2,
    "_problem": 2,
    "_unauthorized": 0,
    "Refused": 1,
    "SignInRefused": 1,
    # The codec sign-in's parameter check: (value, the parameter's name for the message).
    "_printable": 1,
    # The URL checks: (url, the setting's or option's name for the message).
    "require_secure_url": 1,
    "require_endpoint_url": 1,
}
# The same for calls whose name another module uses otherwise, by module: the example payment
# API's answers take (status, error, error_description[, headers]) and its DPoP refusal the
# error_description alone (the status, the error code and the headers are the contract).
MESSAGE_AT_IN = {
    "temporal_ciba_examples.payment_agent.payment_api": {"_error": 2, "BadRequest": 2, "_dpop_error": 0},
    # An approval's state change takes (status, the reason its log line gives).
    "temporal_ciba._approval.machine": {"_show": 1},
    # The record store's driver calls take (what it was doing, for the error message, the operation).
    "temporal_ciba.records._store": {"_call": 0},
    # The evidence's decryption takes (prefix, sealed, body digest, what it opens, for the message).
    "temporal_ciba.records._evidence": {"_decrypt": 3},
}
# Exceptions whose names do not say so (not ...Error, ...Exception, ...Rejected), message first:
# their stable `error` code or their class is the contract, the message text for a person.
MESSAGE_FIRST = {"BindingMessageUnfit", "InvalidDPoPProof", "GrantRefused"}
# Log calls: every argument is text for a person (the format and its values).
LOG_METHODS = {"debug", "info", "warning", "error", "exception", "critical"}
MUTANT_NAME = re.compile(r"^(?P<module>.+?)\.(?P<function>x.+)__mutmut_(?P<number>\d+)$")


def _message_positions(call: ast.Call, module: str = "") -> range:
    """The positional arguments of `call` (in `module`) that are messages for a person."""
    func = call.func
    name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
    at = {**MESSAGE_AT, **MESSAGE_AT_IN.get(module, {})}
    if name in at:
        return range(at[name], at[name] + 1)
    if name.endswith(("Error", "Exception", "Rejected")) or name in MESSAGE_FIRST:
        return range(1)
    return range(0)


class _BlankMessages(ast.NodeTransformer):
    """Replace every message argument, whatever expression builds it, by one placeholder."""

    def __init__(self, module: str = "") -> None:
        self.module = module

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr in LOG_METHODS:
            # A log line's arguments are all one text (a mutant may drop one of them).
            node.args = [ast.Constant("<message>")]
            return node
        positions = _message_positions(node, self.module)
        node.args = [ast.Constant("<message>") if index in positions else arg for index, arg in enumerate(node.args)]
        return node


def _functions(tree: ast.Module) -> dict[str, ast.FunctionDef | ast.AsyncFunctionDef]:
    found = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and "__mutmut_" in node.name:
            found[node.name] = node
    return found


def _body(function: ast.FunctionDef | ast.AsyncFunctionDef) -> ast.Module:
    return ast.Module(body=function.body, type_ignores=[])


def _first_changed_line(original: ast.AST, mutant: ast.AST) -> str:
    before = ast.unparse(original).splitlines()
    after = ast.unparse(mutant).splitlines()
    for old, new in zip(before, after, strict=False):
        if old != new:
            return new.strip()
    return (after[len(before)] if len(after) > len(before) else "<line removed>").strip()


def _readable(function: str) -> str:
    """mutmut's `xǁClassǁmethod` / `x_function` back to `Class.method` / `function`."""
    if function.startswith("xǁ"):
        return ".".join(part for part in function[2:].split("ǁ") if part)
    return function.removeprefix("x_")


def classify(root: Path) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Count verdicts in every .meta under mutants/, and name each unexplained survivor."""
    counts = {"killed": 0, "timeout": 0, "message": 0, "survived": 0, "no tests": 0, "other": 0}
    survivors: list[tuple[str, str]] = []
    for meta_path in sorted((root / "mutants").rglob("*.py.meta")):
        verdicts: dict[str, int | None] = json.loads(meta_path.read_text())["exit_code_by_key"]
        functions = _functions(ast.parse(meta_path.with_suffix("").read_text()))
        for key, code in sorted(verdicts.items()):
            if code in KILLED or code in TIMEOUT:
                counts["killed" if code in KILLED else "timeout"] += 1
                continue
            match = MUTANT_NAME.match(key)
            assert match, key
            # Copies: _BlankMessages changes the trees in place.
            original = _body(copy.deepcopy(functions[f"{match['function']}__mutmut_orig"]))
            mutant = _body(copy.deepcopy(functions[f"{match['function']}__mutmut_{match['number']}"]))
            line = _first_changed_line(original, mutant)
            blank = _BlankMessages(match["module"])
            if ast.dump(blank.visit(original)) == ast.dump(blank.visit(mutant)):
                counts["message"] += 1
                continue
            counts["survived" if code == SURVIVED else "no tests" if code in NO_TESTS else "other"] += 1
            survivors.append((f"{match['module']}:{_readable(match['function'])}: {line}", key))
    return counts, survivors


def load_equivalent(path: Path) -> dict[str, str]:
    """`name # reason` lines; blank lines and lines starting with # are comments."""
    explained = {}
    for raw in path.read_text().splitlines():
        if not raw.strip() or raw.startswith("#"):
            continue
        name, sep, reason = raw.rpartition(" # ")
        if not sep or not reason.strip():
            raise SystemExit(f"{path}: an equivalent mutant needs ' # ' and a reason: {raw}")
        explained[name.strip()] = reason.strip()
    return explained


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("equivalent", type=Path)
    parser.add_argument("--label", default="mutants")
    parser.add_argument("--root", type=Path, default=Path())
    parser.add_argument("--results", type=Path, help="JSON of every group's last figures, updated with this one's")
    parser.add_argument("--modules", default="", help="what the group mutates, for the results")
    parser.add_argument("--commit", default="", help="the commit the group ran at, for the results")
    args = parser.parse_args()
    counts, survivors = classify(args.root)
    explained = load_equivalent(args.equivalent)
    unexplained = [(name, key) for name, key in survivors if name not in explained]
    equivalent = len(survivors) - len(unexplained)
    total = sum(counts.values())
    killed = counts["killed"] + counts["timeout"]
    score = (killed / (total - counts["message"] - equivalent) * 100) if total else 100.0
    print(
        f"{args.label}: {total} mutants: {killed} killed ({counts['timeout']} by timeout), "
        f"{counts['message']} change only a message, {equivalent} listed as equivalent, "
        f"{len(unexplained)} unexplained ({counts['no tests']} reached by no test); "
        f"score {score:.1f}% of the mutants that change behaviour"
    )
    for name, key in unexplained:
        print(f"  SURVIVED {name}    [{key}]")
    if args.results is not None:
        figures = {
            "modules": args.modules,
            "commit": args.commit,
            "mutants": total,
            "killed": killed,
            "message_only": counts["message"],
            "equivalent": equivalent,
            "unexplained": len(unexplained),
            "score": round(score, 1),
        }
        record_results(args.results, args.label, figures)
    return 1 if unexplained else 0


def record_results(path: Path, group: str, figures: dict[str, object]) -> None:
    """Keep `group`'s figures in the JSON at `path` and write its table beside it (`.md`)."""
    results = json.loads(path.read_text()) if path.exists() else {}
    results[group] = figures
    path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    path.with_suffix(".md").write_text(render_table(results))


def render_table(results: dict[str, dict[str, object]]) -> str:
    """The docs' table of every group: what `scripts/mutation.sh` measured, never typed."""
    rows = [
        "| group | mutated | mutants | killed | message only | equivalent (listed) | unexplained | score | at |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for group, f in sorted(results.items()):
        rows.append(
            f"| `{group}` | {f['modules']} | {f['mutants']} | {f['killed']} | {f['message_only']} | "
            f"{f['equivalent']} | {f['unexplained']} | {f['score']}% | `{f['commit']}` |"
        )
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    sys.exit(main())
