# Reads lessons/lessons.toml (the subset of TOML its top comment describes) and prints the
# Makefile's view of it, which the Makefile keeps in target/lessons.mk:
#   LESSON_NUMBERS := 00 01 ...        the lessons the file has
#   TRACE_DEFAULT  := ...              [default]'s trace
#   TRACE_NN       := ...              lesson NN's trace, %default and %NN expanded
#   PROVOKE_NN     := kind+arg ...     lesson NN's provoke kinds
#   EXERCISE_NUMBERS := 01 03 ...      the lessons with an exercise
# POSIX awk (mawk, gawk, busybox). The Rust reader is workshop/src/lessons.rs; a test
# (tests/lesson_index.rs) checks that both read the same.

function fail(msg) {
    printf "lessons.awk: %s:%d: %s\n", FILENAME, FNR, msg > "/dev/stderr"
    failed = 1
    exit 1
}

# The strings of a value: "a" or ["a", "b"], one per element of `out`; returns the count.
function strings(value, out,    n, rest, at) {
    n = 0
    rest = value
    while ((at = index(rest, "\"")) > 0) {
        rest = substr(rest, at + 1)
        at = index(rest, "\"")
        if (at == 0) fail("a string is not closed")
        out[++n] = substr(rest, 1, at - 1)
        rest = substr(rest, at + 1)
    }
    return n
}

function expand(filter, depth,    parts, n, i, out, t) {
    if (depth > 100) fail("trace references loop: " filter)
    n = split(filter, parts, ",")
    out = ""
    for (i = 1; i <= n; i++) {
        t = parts[i]
        if (t == "%default") t = expand(default_trace, depth + 1)
        else if (t ~ /^%[0-9][0-9]$/) {
            if (!(substr(t, 2) in trace)) fail("trace names " t ": no lesson " substr(t, 2))
            t = expand(trace[substr(t, 2)], depth + 1)
        }
        out = out (i > 1 ? "," : "") t
    }
    return out
}

{
    line = $0
    sub(/#.*/, "", line)        # a string never holds '#'
    gsub(/^[ \t]+|[ \t]+$/, "", line)
    if (line == "") next
    if (pending != "") {        # an array running over several lines
        pending = pending " " line
        if (line !~ /]$/) next
        line = pending
        pending = ""
    } else if (line ~ /^\[/) {
        if (line == "[default]") table = "default"
        else if (line ~ /^\[lesson\.[0-9][0-9]\]$/) {
            table = substr(line, 9, 2)
            numbers = numbers (numbers == "" ? "" : " ") table
        } else fail("unknown table " line)
        next
    } else if (line ~ /^[a-z]+ *= *\[/ && line !~ /]$/) {
        pending = line
        next
    }
    eq = index(line, "=")
    if (eq == 0) fail("expected key = value")
    key = substr(line, 1, eq - 1)
    gsub(/[ \t]+$/, "", key)
    value = substr(line, eq + 1)
    if (table == "") fail(key " outside a table")
    n = strings(value, items)
    if (table == "default") {
        if (key != "trace" || n != 1) fail("[default] takes trace = \"...\" only")
        default_trace = items[1]
    } else if (key == "trace") {
        trace[table] = items[1]
    } else if (key == "provoke") {
        kinds = ""
        for (i = 1; i <= n; i++) kinds = kinds (i > 1 ? " " : "") items[i]
        provoke[table] = kinds
    } else if (key == "exercise") {
        exercises = exercises (exercises == "" ? "" : " ") table
    }
}

END {
    if (failed) exit 1
    if (pending != "") fail("an array never closed")
    print "# Made from lessons/lessons.toml by scripts/lessons.awk: edit those, not this."
    print "LESSON_NUMBERS := " numbers
    print "TRACE_DEFAULT := " default_trace
    count = split(numbers, all, " ")
    for (i = 1; i <= count; i++) {
        nn = all[i]
        if (!(nn in trace)) fail("[lesson." nn "] has no trace")
        print "TRACE_" nn " := " expand(trace[nn], 0)
    }
    for (i = 1; i <= count; i++) {
        nn = all[i]
        if (provoke[nn] != "") print "PROVOKE_" nn " := " provoke[nn]
    }
    print "EXERCISE_NUMBERS := " exercises
}
