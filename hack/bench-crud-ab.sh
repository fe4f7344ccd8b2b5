#!/usr/bin/env bash
# Compares two builds of annex on the create, update and get phases of the
# benchmark (bench/cmd/crud), run in turns on the same machine: old, new,
# new, old, old, new... so that a drift of the machine falls on both.
# Prints the medians of each build, the ratio new/old, and the medians of
# the per-run ratios B/A (A is the kube-apiserver's CRD path, measured in
# the same run as B).
#
# usage: hack/bench-crud-ab.sh OLD_ANNEX_BIN NEW_ANNEX_BIN [ROUNDS [COUNT]]
# env:   KUBEBUILDER_ASSETS (required), TARGETS (default A,B), OUT (default a
#        temporary directory), BENCH_FLAGS (more flags for bench),
#        PROFILE_SECONDS (profile annex and the kube-apiserver in the first
#        round's runs, for that many seconds a phase: OUT/old-1/*.pb.gz).
set -euo pipefail

old=$(realpath "$1")
new=$(realpath "$2")
rounds=${3:-3}
count=${4:-3000}
targets=${TARGETS:-A,B}
out=${OUT:-$(mktemp -d -t annex-crud-ab-XXXXXX)}
mkdir -p "$out"
echo "bench-crud-ab: output in $out"

cd "$(dirname "$0")/../bench"
go build -tags integration -o "$out/bench" ./cmd/crud

run() { # label round
	local bin=$old profile=
	[ "$1" = new ] && bin=$new
	[ "$2" = 1 ] && [ -n "${PROFILE_SECONDS:-}" ] && profile=--profile-seconds=$PROFILE_SECONDS
	echo "bench-crud-ab: round $2, $1 ($bin)"
	# shellcheck disable=SC2086
	ANNEX_APISERVER_BIN=$bin "$out/bench" --count="$count" --targets="$targets" \
		--out="$out/$1-$2" $profile ${BENCH_FLAGS:-} >"$out/$1-$2.log" 2>&1 || { echo "run failed: $out/$1-$2.log"; tail -20 "$out/$1-$2.log"; exit 1; }
	sed -n '/^    phase/,$p' "$out/$1-$2.log" | grep -v '^\[' || true
}
for i in $(seq 1 "$rounds"); do
	if [ $((i % 2)) = 1 ]; then run old "$i"; run new "$i"; else run new "$i"; run old "$i"; fi
done

# The medians, by build, target and phase.
for label in old new; do
	jq -s --arg build "$label" '
		def median: sort | if length == 0 then null else .[(length - 1) / 2 | floor] end;
		. as $runs
		| [$runs[0].phases | keys[] as $t | $runs[0].phases[$t] | keys[] as $p | {t: $t, p: $p}]
		| map(. as $k | {
			build: $build, target: $k.t, phase: $k.p,
			opsPerSecond: ([$runs[].phases[$k.t][$k.p].perSecond] | median),
			p50Ms: ([$runs[].phases[$k.t][$k.p].latency.p50Ms] | median),
			p99Ms: ([$runs[].phases[$k.t][$k.p].latency.p99Ms] | median),
			annexCPUMsPerOp: ([$runs[].phases[$k.t][$k.p].cpuMsPerOp["annex"] // 0] | median),
			kasCPUMsPerOp: ([$runs[].phases[$k.t][$k.p].cpuMsPerOp["kube-apiserver"] // 0] | median),
			ratioToA: (if $runs[0].phases.A then [$runs[] | .phases[$k.t][$k.p].perSecond / .phases.A[$k.p].perSecond] | median else null end),
			runs: [$runs[].phases[$k.t][$k.p].perSecond]
		})' "$out"/"$label"-*/crud.json
done | jq -s 'add' >"$out/summary.json"

jq -r '
	(map(select(.build == "old")) | map({key: "\(.target) \(.phase)", value: .}) | from_entries) as $old
	| ["build", "target", "phase", "ops/s", "new/old", "B/A", "p50 ms", "p99 ms", "annex CPU ms/op", "kas CPU ms/op", "runs (ops/s)"],
	  (.[] | [.build, .target, .phase, (.opsPerSecond | floor),
		(if .build == "new" then (.opsPerSecond / $old["\(.target) \(.phase)"].opsPerSecond * 100 | round / 100) else "" end),
		(if .ratioToA then (.ratioToA * 100 | round / 100) else "" end),
		(.p50Ms * 10 | round / 10), (.p99Ms * 10 | round / 10),
		(.annexCPUMsPerOp * 100 | round / 100), (.kasCPUMsPerOp * 100 | round / 100),
		(.runs | map(floor) | join(" "))])
	| @tsv' "$out/summary.json" | column -t -s $'\t'
