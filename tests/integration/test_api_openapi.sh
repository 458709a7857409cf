#!/bin/bash
# test_api_openapi.sh - docs/openapi.yaml describes the real API: every operation it lists is
# called here, every answer's status is one the file declares for that operation, and every JSON
# body validates against the declared schema (errors against Error). Also checks that the file
# lists every route flowd answers (an undocumented route fails) and that docs/api.md names every
# path of the file.
. "${FLOWD_SRC:-$(dirname "$0")/../..}/tests/lib/harness.sh"

h_setup
h_flowd_start
printf '{"x":1}' | kcat -b "$H_BOOTSTRAP" -P -t ai.flowx.dev.engine.receive.scoring.v1 -H processInstanceId=777777

H_URL=$H_URL SPEC=$FLOWD_SRC/docs/openapi.yaml APIMD=$FLOWD_SRC/docs/api.md \
    DEF=$FLOWD_SRC/examples/processes/credit-check.json $PY - <<'PYEOF' || h_fail "the API does not match docs/openapi.yaml"
import json, os, re, sys, time, urllib.request, urllib.error
import yaml

spec = yaml.safe_load(open(os.environ["SPEC"]))
url = os.environ["H_URL"]
called, problems = set(), []


def resolve(s):
    while isinstance(s, dict) and "$ref" in s:
        node = spec
        for part in s["$ref"].lstrip("#/").split("/"):
            node = node[part]
        s = node
    return s


def validate(v, schema, where):
    s = resolve(schema)
    if "allOf" in s:
        for sub in s["allOf"]:
            validate(v, sub, where)
        return
    if v is None:
        if not s.get("nullable"):
            problems.append("%s: null where the schema does not allow it" % where)
        return
    t = s.get("type")
    ok = {"object": isinstance(v, dict), "array": isinstance(v, list),
          "string": isinstance(v, str), "boolean": isinstance(v, bool),
          "integer": isinstance(v, int) and not isinstance(v, bool),
          "number": isinstance(v, (int, float)) and not isinstance(v, bool), None: True}[t]
    if not ok:
        problems.append("%s: %r is not %s" % (where, v, t))
        return
    if "enum" in s and v not in s["enum"]:
        problems.append("%s: %r not in %s" % (where, v, s["enum"]))
    if t == "string" and s.get("format") == "date-time" and \
            not re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$", v):
        problems.append("%s: %r is not an ISO 8601 UTC time" % (where, v))
    if t == "object":
        for r in s.get("required", []):
            if r not in v:
                problems.append("%s: required member %r missing" % (where, r))
        for k, sub in s.get("properties", {}).items():
            if k in v:
                validate(v[k], sub, where + "." + k)
        ap = s.get("additionalProperties")
        if isinstance(ap, dict):
            for k, x in v.items():
                if k not in s.get("properties", {}):
                    validate(x, ap, where + "." + k)
    if t == "array":
        for i, x in enumerate(v):
            validate(x, s.get("items", {}), "%s[%d]" % (where, i))


def call(method, path, body=None, template=None):
    """Calls and checks the answer against the operation `template` (the spec path)."""
    data = body.encode() if isinstance(body, str) else body
    req = urllib.request.Request(url + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            status, ctype, text = r.status, r.headers.get("Content-Type", ""), r.read().decode()
    except urllib.error.HTTPError as e:
        status, ctype, text = e.code, e.headers.get("Content-Type", ""), e.read().decode()
    template = template or path.split("?")[0]
    op = spec["paths"].get(template, {}).get(method.lower())
    where = "%s %s -> %d" % (method, path, status)
    if op is None:
        problems.append("%s: operation %s %s is not in the spec" % (where, method, template))
        return status, None
    called.add((template, method.lower()))
    resp = op["responses"].get(str(status))
    if resp is None:
        problems.append("%s: status %d is not declared (declared: %s)"
                        % (where, status, sorted(op["responses"])))
        return status, None
    content = resolve(resp).get("content", {})
    if "application/json" in content:
        if not ctype.startswith("application/json"):
            problems.append("%s: Content-Type %r" % (where, ctype))
        j = json.loads(text)
        validate(j, content["application/json"]["schema"], where)
        return status, j
    if "text/plain" in content and not ctype.startswith("text/plain"):
        problems.append("%s: Content-Type %r" % (where, ctype))
    return status, text


definition = open(os.environ["DEF"]).read()
call("GET", "/health")
call("GET", "/ready")
call("POST", "/v1/definitions/validate", definition)
call("POST", "/v1/definitions/validate", '{"key":"x","nodes":[]}')
call("POST", "/v1/definitions", definition)
call("POST", "/v1/definitions", definition)
call("POST", "/v1/definitions", "{not json")
call("GET", "/v1/definitions")
call("GET", "/v1/definitions/credit-check", template="/v1/definitions/{key}")
call("GET", "/v1/definitions/nope", template="/v1/definitions/{key}")
call("GET", "/v1/definitions/credit-check/1", template="/v1/definitions/{key}/{version}")
call("GET", "/v1/definitions/credit-check/x", template="/v1/definitions/{key}/{version}")
st, inst = call("POST", "/v1/processes/credit-check/start", '{"clientId": 1, "amount": 3}',
                template="/v1/processes/{key}/start")
call("POST", "/v1/processes/nope/start", "{}", template="/v1/processes/{key}/start")
call("POST", "/v1/processes/credit-check/start", "[1]", template="/v1/processes/{key}/start")
i = inst["id"]
_, second = call("POST", "/v1/processes/credit-check/start", "{}", template="/v1/processes/{key}/start")
call("GET", "/v1/instances")
call("GET", "/v1/instances?state=STARTED&definition=credit-check&limit=1", template="/v1/instances")
call("GET", "/v1/instances?limit=abc", template="/v1/instances")
for suffix, tpl in (("", "/v1/instances/{id}"), ("/history", "/v1/instances/{id}/history")):
    call("GET", "/v1/instances/%d%s" % (i, suffix), template=tpl)
    call("GET", "/v1/instances/999999%s" % suffix, template=tpl)
    call("GET", "/v1/instances/abc%s" % suffix, template=tpl)
call("POST", "/v1/instances/%d/messages" % i, '{"body": {"score": 1, "approved": false}}',
     template="/v1/instances/{id}/messages")
call("POST", "/v1/instances/%d/messages" % i, '{}', template="/v1/instances/{id}/messages")
call("POST", "/v1/instances/999999/messages" % (), '{"body": 1}', template="/v1/instances/{id}/messages")
call("POST", "/v1/instances/%d/retry" % i, None, template="/v1/instances/{id}/retry")
call("POST", "/v1/instances/999999/retry", None, template="/v1/instances/{id}/retry")
call("POST", "/v1/instances/%d/cancel" % second["id"], '{"reason": "test"}',
     template="/v1/instances/{id}/cancel")
call("POST", "/v1/instances/%d/cancel" % second["id"], None, template="/v1/instances/{id}/cancel")
call("POST", "/v1/instances/%d/cancel" % second["id"], '[]', template="/v1/instances/{id}/cancel")
for _ in range(300):
    st, dl = call("GET", "/v1/dead-letters")
    if dl and dl["deadLetters"]:
        break
    time.sleep(0.1)
else:
    problems.append("no dead letter appeared")
call("GET", "/v1/dead-letters?limit=0", template="/v1/dead-letters")
if dl and dl["deadLetters"]:
    call("POST", "/v1/dead-letters/%d/replay" % dl["deadLetters"][0]["id"],
         template="/v1/dead-letters/{id}/replay")
call("POST", "/v1/dead-letters/999999/replay", template="/v1/dead-letters/{id}/replay")
call("GET", "/metrics")

missing = [(p, m) for p, ops in spec["paths"].items() for m in ops if (p, m) not in called]
if missing:
    problems.append("operations of the spec never called: %s" % missing)
apimd = open(os.environ["APIMD"]).read()
for p, ops in spec["paths"].items():
    for m in ops:
        if "%s %s" % (m.upper(), p) not in apimd:
            problems.append("docs/api.md does not document %s %s" % (m.upper(), p))
for p in problems:
    print("openapi:", p)
sys.exit(1 if problems else 0)
PYEOF
echo "ok: every operation of docs/openapi.yaml called; statuses declared and bodies valid against the schemas; docs/api.md documents every operation"
