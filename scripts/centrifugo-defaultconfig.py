#!/usr/bin/env python3
"""Writes what `centrifugo defaultconfig -c config.json` prints, read from Centrifugo's source.

There is no Go toolchain here, so the Go structs are parsed instead of run: the `Config`
struct of internal/config/config.go and the types of internal/configtypes, with their
`json` tags (names, `omitempty`, `-`), `default` tags (applied as Centrifugo's envconfig
applies them), embedded structs (promoted as encoding/json promotes them), nil slices and
maps (`null`, as Go marshals them; `[]` / `{}` where a default says so) and durations (as
Go's time.Duration.String() prints them).

Usage:
  scripts/centrifugo-defaultconfig.py MIRROR [--rev REV] [--items] [-o FILE]

MIRROR is a Centrifugo git directory (bare or not). `--items` puts one item into each list
of objects (a namespace, an RPC namespace, a named proxy, a consumer), as
`centrifugo defaultconfig -b base.json` prints them when base.json names one of each: so
that their keys are covered too. wshub keeps the plain output as
crates/server/tests/fixtures/centrifugo-defaultconfig.json and the `--items` one as
crates/server/src/config/centrifugo-defaultconfig.json (Centrifugo's defaults, read at
start).
"""

import argparse
import json
import re
import subprocess
import sys

SCALARS = {
    "string": "", "bool": False, "int": 0, "int8": 0, "int16": 0, "int32": 0, "int64": 0,
    "uint": 0, "uint8": 0, "uint16": 0, "uint32": 0, "uint64": 0, "float32": 0.0, "float64": 0.0,
}
# Named types of other packages, by what JSON they become.
EXTERNAL = {"centrifuge.DeltaType": "string", "time.Duration": "int64"}

NS_PER = {"ns": 1, "us": 10**3, "µs": 10**3, "μs": 10**3, "ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}


def parse_duration(s):
    """time.ParseDuration, for the forms Centrifugo's defaults use."""
    if s in ("0", ""):
        return 0
    total = 0
    for num, unit in re.findall(r"([0-9.]+)(ns|us|µs|μs|ms|s|m|h)", s):
        total += round(float(num) * NS_PER[unit])
    if not re.fullmatch(r"(?:[0-9.]+(?:ns|us|µs|μs|ms|s|m|h))+", s):
        raise ValueError(f"bad duration {s!r}")
    return total


def _frac(v, digits):
    """v / 10**digits with trailing zeros of the fraction removed (Go's fmtFrac + fmtInt)."""
    whole, frac = divmod(v, 10**digits)
    f = str(frac).rjust(digits, "0").rstrip("0")
    return f"{whole}.{f}" if f else str(whole)


def format_duration(ns):
    """Go's time.Duration.String()."""
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    u = abs(ns)
    if u < 10**9:
        if u < 10**3:
            return f"{sign}{u}ns"
        if u < 10**6:
            return f"{sign}{_frac(u, 3)}µs"
        return f"{sign}{_frac(u, 6)}ms"
    secs = _frac(u % (60 * 10**9), 9) + "s"
    mins_total = u // (60 * 10**9)
    if mins_total == 0:
        return sign + secs
    hours, mins = divmod(mins_total, 60)
    if hours == 0:
        return f"{sign}{mins}m{secs}"
    return f"{sign}{hours}h{mins}m{secs}"


def git_show(mirror, rev, path):
    return subprocess.run(["git", "--git-dir", mirror, "show", f"{rev}:{path}"], check=True,
                          capture_output=True, text=True).stdout


def git_ls(mirror, rev, folder):
    out = subprocess.run(["git", "--git-dir", mirror, "ls-tree", "--name-only", rev, folder + "/"],
                         check=True, capture_output=True, text=True).stdout
    return [p for p in out.split() if p.endswith(".go") and not p.endswith("_test.go")]


def parse_tag(tag):
    """reflect.StructTag.Get for every key: key:"go-quoted value" pairs."""
    out = {}
    for key, val in re.findall(r'([A-Za-z_]+):"((?:[^"\\]|\\.)*)"', tag):
        out[key] = json.loads(f'"{val}"') if "\\" in val else val
    return out


def strip_comments(src):
    src = re.sub(r"/\*.*?\*/", "", src, flags=re.S)
    lines = []
    for line in src.split("\n"):
        # A // outside backticks and quotes starts a comment.
        res, q = [], None
        i = 0
        while i < len(line):
            c = line[i]
            if q:
                res.append(c)
                if c == "\\" and q == '"' and i + 1 < len(line):
                    res.append(line[i + 1])
                    i += 1
                elif c == q:
                    q = None
            elif c in "`\"":
                q = c
                res.append(c)
            elif line.startswith("//", i):
                break
            else:
                res.append(c)
            i += 1
        lines.append("".join(res))
    return "\n".join(lines)


def parse_types(sources):
    """Returns {name: ("struct", [fields]) | ("alias", type string)} and the set of types
    with a Decode method (envconfig reads their default through it)."""
    types, decoders = {}, set()
    for src in sources:
        src = strip_comments(src)
        decoders.update(re.findall(r"func \(\w+ \*?(\w+)\) Decode\(", src))
        for m in re.finditer(r"^type (\w+) struct \{", src, flags=re.M):
            body, depth, i = [], 1, m.end()
            while depth:
                c = src[i]
                depth += {"{": 1, "}": -1}.get(c, 0)
                body.append(c)
                i += 1
            types[m.group(1)] = ("struct", parse_fields("".join(body[:-1])))
        for m in re.finditer(r"^type (\w+) ([^\s{][^\n]*)$", src, flags=re.M):
            if not m.group(2).startswith("struct"):
                types[m.group(1)] = ("alias", m.group(2).strip())
    return types, decoders


def parse_fields(body):
    fields = []
    for line in body.split("\n"):
        line = line.strip()
        if not line:
            continue
        tag = ""
        t = re.search(r"`([^`]*)`\s*$", line)
        if t:
            tag, line = t.group(1), line[: t.start()].strip()
        parts = line.split(None, 1)
        if len(parts) == 1:  # embedded
            fields.append({"name": parts[0].lstrip("*").split(".")[-1], "type": parts[0], "embedded": True, "tag": parse_tag(tag)})
        else:
            for name in parts[0].rstrip(",").split(","):
                fields.append({"name": name.strip(), "type": parts[1].strip(), "embedded": False, "tag": parse_tag(tag)})
    return fields


class Gen:
    def __init__(self, types, decoders):
        self.types, self.decoders = types, decoders

    def resolve(self, t):
        """Type string -> (kind, detail): kind in scalar, duration, struct, slice, map, ptr, func."""
        t = t.strip()
        if t.startswith("func"):
            return ("func", None)
        if t.startswith("*"):
            return ("ptr", t[1:])
        if t.startswith("[]"):
            return ("slice", t[2:])
        if t.startswith("map["):
            return ("map", t)
        if t in SCALARS:
            return ("scalar", t)
        if t in EXTERNAL:
            return ("scalar", EXTERNAL[t])
        name = t.split(".")[-1] if t.startswith("configtypes.") else t
        if name == "Duration":
            return ("duration", None)
        if name not in self.types:
            raise KeyError(f"unknown type {t}")
        kind, detail = self.types[name]
        if kind == "struct":
            return ("struct", name)
        inner = self.resolve(detail)
        return (inner[0], inner[1], name)  # a named slice/map/scalar keeps its name

    def fields(self, struct):
        """encoding/json's visible fields of a struct, in order, embedded ones promoted
        (Go's dominance rule: the shallowest wins, a tagged one among equals, else none)."""
        found = []

        def walk(name, depth):
            for f in self.types[name][1]:
                tag = f["tag"].get("json", "")
                key = tag.split(",")[0]
                if tag == "-":
                    continue
                r = self.resolve(f["type"]) if not f["type"].startswith("func") else ("func", None)
                if r[0] == "func":
                    continue
                if f["embedded"] and not key and r[0] == "struct":
                    walk(r[1], depth + 1)
                    continue
                found.append({"key": key or f["name"], "depth": depth, "tagged": bool(key),
                              "omitempty": "omitempty" in tag.split(",")[1:], "field": f})

        walk(struct, 0)
        out = []
        for item in found:
            rivals = [x for x in found if x["key"] == item["key"]]
            top = min(x["depth"] for x in rivals)
            best = [x for x in rivals if x["depth"] == top]
            if len(best) > 1:
                best = [x for x in best if x["tagged"]]
            if len(best) == 1 and best[0] is item:
                out.append(item)
        return out

    def value(self, type_str, default):
        r = self.resolve(type_str)
        kind = r[0]
        if kind == "scalar":
            go = r[1]
            if default is None:
                return SCALARS.get(go, "")
            if go == "bool":
                return default == "true"
            if go.startswith(("int", "uint")):
                return int(default)
            if go.startswith("float"):
                return float(default)
            return default
        if kind == "duration":
            return format_duration(parse_duration(default) if default else 0)
        if kind == "struct":
            return self.struct(r[1])
        if kind == "ptr":
            # envconfig makes every nil pointer to a struct a zero instance.
            return self.value(r[1], default)
        if kind == "slice":
            if default is None:
                return None
            named = r[2] if len(r) > 2 else None
            if named in self.decoders or default.startswith("["):
                return json.loads(default)
            return [self.value(r[1], v) for v in default.split(" ")]
        if kind == "map":
            return None if default is None else json.loads(default)
        raise ValueError(kind)

    def struct(self, name):
        out = {}
        for item in self.fields(name):
            f = item["field"]
            default = f["tag"].get("default") or None
            v = self.value(f["type"], default)
            if item["omitempty"] and v in (None, "", 0, False, [], {}):
                continue
            out[item["key"]] = v
        return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mirror")
    ap.add_argument("--rev", default="HEAD")
    ap.add_argument("--items", action="store_true")
    ap.add_argument("-o", "--output")
    a = ap.parse_args()
    paths = ["internal/config/config.go"] + git_ls(a.mirror, a.rev, "internal/configtypes")
    types, decoders = parse_types(git_show(a.mirror, a.rev, p) for p in paths)
    g = Gen(types, decoders)
    conf = g.struct("Config")
    # defaultconfig.go: "This is an unreleased feature so we remove RedisNats".
    conf["broker"].pop("redisnats", None)
    if a.items:
        # Centrifugo reads each list item's defaults with envconfig, as for the root. The
        # base file names each item, with what Centrifugo's validation asks of it: an
        # endpoint for a proxy, a known type for a consumer (even a disabled one).
        conf["channel"]["namespaces"] = [dict(name="ns", **g.struct("ChannelOptions"))]
        conf["rpc"]["namespaces"] = [dict(name="rpc", **g.struct("RpcOptions"))]
        proxy = {"name": "proxy", "endpoint": "http://localhost:3000/centrifugo/proxy"}
        conf["proxies"] = [g.struct("NamedProxy") | proxy]
        conf["consumers"] = [g.struct("Consumer") | {"name": "consumer", "type": "postgresql"}]
    text = json.dumps(conf, indent=2, ensure_ascii=False) + "\n"
    if a.output:
        with open(a.output, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
