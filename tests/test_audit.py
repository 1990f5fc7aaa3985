"""The audit log on SQLite and on a real PostgreSQL server: an entry's hash computed by hand, tampering
with the rows in SQL found by verify at the right entry, pruning that keeps the chain verifiable, and
two processes appending at once without forking the chain."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import text

from xvad.service import audit

from servers import postgres_server  # noqa: F401  (the session fixture)

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")


def rows(db) -> list[dict]:
    """The audit_log rows as the database holds them, with ``at`` as the ISO text that is hashed."""
    with db.engine.connect() as conn:
        out = [dict(r._mapping) for r in conn.execute(text("SELECT * FROM audit_log ORDER BY id"))]
    for r in out:
        at = r["at"] if isinstance(r["at"], datetime) else datetime.fromisoformat(r["at"])
        at = at.replace(tzinfo=timezone.utc) if at.tzinfo is None else at.astimezone(timezone.utc)
        r["at_text"] = at.strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")
    return out


def sql(db, statement: str, **params) -> None:
    with db.transaction() as s:
        s.execute(text(statement), params)


def forged_hash(entry_id, at_text, actor, action, target, details_json, prev_hash) -> str:
    """The hash a forger who knows the rule computes, written out by hand."""
    content = (f'{{"action":"{action}","actor":"{actor}","at":"{at_text}","details":{details_json},'
               f'"id":{entry_id},"prev_hash":"{prev_hash}","target":"{target}"}}')
    return hashlib.sha256(content.encode()).hexdigest()


def six(db) -> list[dict]:
    """Six entries of different kinds; returns their rows."""
    audit.record(db, "system", "alert.raised", "alert:17", {"camera": "door", "score": 0.91})
    audit.record(db, "ann", "alert.viewed", "alert:17")
    audit.record(db, "ann", "alert.decided", "alert:17", {"verdict": "dismissed", "reason": "a hug"})
    audit.record(db, "bob", "camera.stopped", "camera:door", {"via": "api"})
    audit.record(db, "system", "alert.ended", "alert:17", {"reason": "scores", "peak_score": 0.95})
    audit.record(db, "root", "user.added", "user:cy", {"role": "viewer", "cameras": ["door", "yard"]})
    return rows(db)


def test_an_entry_hashes_its_canonical_json_and_chains_to_the_previous(db):
    first = audit.record(db, "system", "alert.raised", "alert:17", {"score": 0.91, "camera": "door"})
    second = audit.record(db, "ann", "alert.decided", "alert:17", {"verdict": "confirmed", "reason": "a fight"})
    r1, r2 = rows(db)
    assert (r1["id"], r2["id"]) == (first, second) and second > first
    by_hand = ('{"action":"alert.raised","actor":"system","at":"' + r1["at_text"] + '",'
               '"details":{"camera":"door","score":0.91},"id":' + str(first) + ',"prev_hash":"' + "0" * 64 + '",'
               '"target":"alert:17"}')
    assert r1["prev_hash"] == "0" * 64 and r1["hash"] == hashlib.sha256(by_hand.encode()).hexdigest()
    by_hand = ('{"action":"alert.decided","actor":"ann","at":"' + r2["at_text"] + '",'
               '"details":{"reason":"a fight","verdict":"confirmed"},"id":' + str(second) + ','
               '"prev_hash":"' + r1["hash"] + '","target":"alert:17"}')
    assert r2["prev_hash"] == r1["hash"] and r2["hash"] == hashlib.sha256(by_hand.encode()).hexdigest()
    assert json.loads(r2["details"]) == {"verdict": "confirmed", "reason": "a fight"}
    assert r1["at_text"] <= r2["at_text"]
    assert audit.verify(db) == audit.VerifyResult(True, 2)
    exported = list(audit.export(db))
    assert [e["hash"] for e in exported] == [r1["hash"], r2["hash"]]
    assert exported[0]["at"] == r1["at_text"] and exported[1]["details"] == {"verdict": "confirmed",
                                                                             "reason": "a fight"}


def test_bad_entries_are_refused_and_long_names_cut_short(db):
    with pytest.raises(ValueError, match="alert.deleted"):
        audit.record(db, "system", "alert.deleted", "alert:1")
    with pytest.raises(ValueError):
        audit.record(db, "", "alert.viewed", "alert:1")
    with pytest.raises(ValueError):
        audit.record(db, "ann", "alert.viewed", "alert:1", {"score": float("nan")})
    assert rows(db) == [] and audit.verify(db) == audit.VerifyResult(True, 0)
    odd = audit.record(db, "ann", "alert.viewed", "alert:1", {2: (1, 2), 10: "a"})   # kept as JSON reads it back
    assert json.loads(rows(db)[0]["details"]) == {"2": [1, 2], "10": "a"} and audit.verify(db).ok
    sql(db, "DELETE FROM audit_log WHERE id = :i", i=odd)
    long = audit.record(db, "x" * 300, "user.login_failed", "user:" + "y" * 300)   # cut to the columns' sizes
    assert [(r["id"], r["actor"], r["target"]) for r in rows(db)] == [(long, "x" * 64, "user:" + "y" * 123)]
    assert audit.verify(db).ok


def test_an_entry_in_a_rolled_back_transaction_leaves_no_trace(db):
    audit.record(db, "system", "alert.raised", "alert:1")
    with pytest.raises(RuntimeError):
        with db.transaction() as s:
            audit.record(db, "ann", "alert.decided", "alert:1", {"verdict": "confirmed"}, session=s)
            raise RuntimeError("the verdict failed")
    last = audit.record(db, "system", "alert.ended", "alert:1")
    r = rows(db)
    assert [x["action"] for x in r] == ["alert.raised", "alert.ended"] and r[1]["id"] == last
    assert r[1]["prev_hash"] == r[0]["hash"]
    assert audit.verify(db) == audit.VerifyResult(True, 2)       # a gap in the ids (PostgreSQL) is no break


def test_an_intact_log_verifies(db):
    six(db)
    assert audit.verify(db) == audit.VerifyResult(True, 6)


def test_an_edited_detail_is_named(db):
    r = six(db)
    sql(db, "UPDATE audit_log SET details = :d WHERE id = :i", d='{"reason":"a fight","verdict":"confirmed"}',
        i=r[2]["id"])
    v = audit.verify(db)
    assert (v.ok, v.first_bad, v.problem) == (False, r[2]["id"], "its content was edited")


def test_an_edited_actor_or_time_is_named(db):
    r = six(db)
    sql(db, "UPDATE audit_log SET actor = 'eve' WHERE id = :i", i=r[3]["id"])
    assert audit.verify(db).first_bad == r[3]["id"]
    sql(db, "UPDATE audit_log SET actor = 'bob' WHERE id = :i", i=r[3]["id"])
    assert audit.verify(db).ok                                      # put back: intact again
    sql(db, "UPDATE audit_log SET at = :at WHERE id = :i", at=r[1]["at_text"], i=r[2]["id"])
    v = audit.verify(db)
    if r[1]["at_text"] != r[2]["at_text"]:
        assert (v.first_bad, v.problem) == (r[2]["id"], "its content was edited")


def test_a_deleted_entry_is_named_by_the_one_after_it(db):
    r = six(db)
    sql(db, "DELETE FROM audit_log WHERE id = :i", i=r[3]["id"])
    v = audit.verify(db)
    assert (v.ok, v.first_bad, v.entries) == (False, r[4]["id"], 5)
    assert v.problem == f"its link to entry {r[2]['id']} is broken: an entry between them was deleted"


def test_a_deleted_first_entry_is_found(db):
    r = six(db)
    sql(db, "DELETE FROM audit_log WHERE id = :i", i=r[0]["id"])
    v = audit.verify(db)
    assert (v.ok, v.first_bad) == (False, r[1]["id"]) and "deleted" in v.problem


def test_an_entry_inserted_in_the_middle_with_a_forged_id_and_time_is_found(db):
    r = six(db)
    # the forger makes room after the third entry and writes a well-formed entry there, hashed by the rule
    for old in reversed(r[3:]):
        sql(db, "UPDATE audit_log SET id = :new WHERE id = :old", new=old["id"] + 1, old=old["id"])
    at = datetime.fromisoformat(r[2]["at_text"]) + (datetime.fromisoformat(r[3]["at_text"]) -
                                                     datetime.fromisoformat(r[2]["at_text"])) / 2
    at_text = at.strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")
    forged_id = r[3]["id"]
    h = forged_hash(forged_id, at_text, "ann", "alert.decided", "alert:17", '{"verdict":"confirmed"}', r[2]["hash"])
    sql(db, "INSERT INTO audit_log (id, at, actor, action, target, details, prev_hash, hash) "
            "VALUES (:i, :at, 'ann', 'alert.decided', 'alert:17', :d, :p, :h)",
        i=forged_id, at=at if db.engine.dialect.name == "postgresql" else at.strftime("%Y-%m-%d %H:%M:%S.%f"),
        d='{"verdict":"confirmed"}', p=r[2]["hash"], h=h)
    tampered = rows(db)
    assert [x["id"] for x in tampered] == [x["id"] for x in r[:3]] + [forged_id] + [x["id"] + 1 for x in r[3:]]
    assert audit.verify(db).ok is False
    v = audit.verify(db)
    # the forged entry itself is well formed; the chain breaks at the genuine entry it was put before
    assert v.first_bad == r[3]["id"] + 1
    assert v.problem == f"its link to entry {forged_id} is broken: an entry was inserted or moved before it"


def test_an_entry_appended_with_a_time_from_the_past_is_found(db):
    r = six(db)
    new_id = r[-1]["id"] + 1
    h = forged_hash(new_id, r[2]["at_text"], "ann", "alert.decided", "alert:17", "{}", r[-1]["hash"])
    at = datetime.fromisoformat(r[2]["at_text"])
    sql(db, "INSERT INTO audit_log (id, at, actor, action, target, details, prev_hash, hash) "
            "VALUES (:i, :at, 'ann', 'alert.decided', 'alert:17', '{}', :p, :h)",
        i=new_id, at=at if db.engine.dialect.name == "postgresql" else at.strftime("%Y-%m-%d %H:%M:%S.%f"),
        p=r[-1]["hash"], h=h)
    v = audit.verify(db)
    if r[2]["at_text"] < r[-1]["at_text"]:
        assert (v.first_bad, v.problem) == (new_id, f"it is out of order: its time is before entry {r[-1]['id']}'s")
    else:                                    # the six were written within one microsecond: nothing to see
        assert v.ok


def test_reordered_entries_are_found(db):
    r = six(db)
    a, b = r[1]["id"], r[4]["id"]
    sql(db, "UPDATE audit_log SET id = -1 WHERE id = :a", a=a)
    sql(db, "UPDATE audit_log SET id = :a WHERE id = :b", a=a, b=b)
    sql(db, "UPDATE audit_log SET id = :b WHERE id = -1", b=b)
    v = audit.verify(db)
    assert (v.ok, v.first_bad) == (False, a) and "inserted or moved" in v.problem


def test_pruning_keeps_the_chain_verifiable(db):
    r = six(db)
    before = datetime.fromisoformat(r[3]["at_text"])
    gone = [x["id"] for x in r if datetime.fromisoformat(x["at_text"]) < before]   # by hand, from the rows
    assert audit.prune(db, before) == len(gone) > 0
    kept = rows(db)
    assert [x["id"] for x in kept[:-1]] == [x["id"] for x in r if x["id"] not in gone]
    marker = kept[-1]
    assert (marker["action"], marker["target"], marker["prev_hash"]) == ("audit.pruned", "audit", r[-1]["hash"])
    assert json.loads(marker["details"])["through_id"] == gone[-1]
    assert json.loads(marker["details"])["through_hash"] == r[len(gone) - 1]["hash"] == kept[0]["prev_hash"]
    assert audit.verify(db) == audit.VerifyResult(True, len(kept))
    audit.record(db, "system", "alert.raised", "alert:18")
    assert audit.verify(db) == audit.VerifyResult(True, len(kept) + 1)
    assert audit.prune(db, before) == 0                      # nothing older left: no new entry
    assert len(rows(db)) == len(kept) + 1

    everything = audit.prune(db, datetime.now(timezone.utc) + timedelta(days=1))
    assert everything == len(kept) + 1
    only = rows(db)
    assert len(only) == 1 and only[0]["action"] == "audit.pruned"
    assert only[0]["prev_hash"] == json.loads(only[0]["details"])["through_hash"]
    assert audit.verify(db) == audit.VerifyResult(True, 1)


def test_after_pruning_a_deleted_first_entry_is_still_found(db):
    r = six(db)
    audit.prune(db, datetime.fromisoformat(r[2]["at_text"]))
    first = rows(db)[0]
    sql(db, "DELETE FROM audit_log WHERE id = :i", i=first["id"])
    v = audit.verify(db)
    assert (v.ok, v.first_bad) == (False, rows(db)[0]["id"]) and "deleted" in v.problem


def test_a_broken_chain_is_not_pruned(db):
    r = six(db)
    sql(db, "UPDATE audit_log SET target = 'alert:99' WHERE id = :i", i=r[1]["id"])
    assert audit.prune(db, datetime.now(timezone.utc) + timedelta(days=1)) == 0
    assert len(rows(db)) == 6 and audit.verify(db).first_bad == r[1]["id"]


def test_entries_filter_and_page_newest_first(db):
    r = six(db)
    got, total = audit.entries(db, target="alert:17")
    want = [x["id"] for x in reversed(r) if x["target"] == "alert:17"]
    assert total == len(want) == 4 and [e["id"] for e in got] == want
    got, total = audit.entries(db, action="user.added")
    assert total == 1 and got[0]["details"] == {"role": "viewer", "cameras": ["door", "yard"]}
    got, total = audit.entries(db, limit=2, offset=1)
    assert total == 6 and [e["id"] for e in got] == [r[4]["id"], r[3]["id"]]
    assert audit.entries(db, target="x' OR '1'='1") == ([], 0)
    since = datetime.fromisoformat(r[3]["at_text"])
    assert [e["id"] for e in audit.export(db, since)] == [x["id"] for x in r
                                                           if datetime.fromisoformat(x["at_text"]) >= since]


APPENDER = """
    import sys, time
    from xvad.service import audit
    from xvad.service.store import Database
    url, actor, n, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    db = Database(url)
    while time.time() < go:          # both start together
        time.sleep(0.002)
    for i in range(n):
        audit.record(db, actor, "alert.viewed", f"alert:{i}", {"i": i})
    print("done", flush=True)
"""


def test_two_processes_appending_at_once_keep_one_chain(db, url):
    n = 60
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    go = time.time() + 6.0               # time for both interpreters to import
    procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(APPENDER), url, actor, str(n), str(go)],
                              env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for actor in ("proc-a", "proc-b")]
    for p in procs:
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0 and out.strip() == "done", f"exit {p.returncode}, err {err[-3000:]}"
    r = rows(db)
    assert len(r) == 2 * n
    for actor in ("proc-a", "proc-b"):
        assert sorted(json.loads(x["details"])["i"] for x in r if x["actor"] == actor) == list(range(n))
    assert all(b["prev_hash"] == a["hash"] for a, b in zip(r, r[1:]))   # one chain, no fork
    assert audit.verify(db) == audit.VerifyResult(True, 2 * n)
