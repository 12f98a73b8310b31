//! End-to-end: MongoDB bypasses a tester found and their fixes: duplicated command fields,
//! the profiler, `explain`, array positions in label paths, `$expr` in filters, and refusals
//! inside transactions.

mod common;
use common::mongo::python;
use common::mongo_gov::*;

/// Python prelude of the bypass tests below: the tester's data, written directly upstream, an
/// admin and an analyst through dgf, and `attempt(label, f)` printing `label RAN leaked repr` or
/// `label DENIED code leaked message` (leaked: a clear email, phone or salary is in it).
const BYPASS_PRELUDE: &str = r#"
import pymongo
from pymongo.errors import OperationFailure
ad = pymongo.MongoClient("mongodb://admin:admin-pw@127.0.0.1:PORT/?directConnection=true")
an = pymongo.MongoClient("mongodb://analyst:analyst-pw@127.0.0.1:PORT/?directConnection=true")
direct = pymongo.MongoClient("mongodb://127.0.0.1:UPSTREAM/?directConnection=true")
D = direct.app
for c in ["users", "orders", "payroll"]:
    D.drop_collection(c)
D.users.insert_one({"_id": 1, "email": "s3cr3t.alice@example.com", "contacts": [{"phone": "555-0101"}, {"phone": "555-0102"}]})
D.orders.insert_one({"_id": 10, "user": 1})
D.payroll.insert_one({"_id": 1, "salary": 987654})
def leaked(x):
    s = repr(x)
    return any(k in s for k in ["s3cr3t", "555-01", "987654"])
def attempt(label, f):
    try:
        out = f()
        print(label, "RAN", leaked(out), repr(out)[:400])
    except OperationFailure as e:
        print(label, "DENIED", e.code, leaked(str(e)), repr(str(e))[:400])
"#;

fn run_bypass(script: &str) -> (String, Stack) {
    let st = stack();
    let full = format!("{BYPASS_PRELUDE}{script}")
        .replace("UPSTREAM", &st.server.port.to_string())
        .replace("PORT", &st.port.to_string());
    let out = python(&full, &[]).unwrap_or_else(|e| panic!("{e}\n{}", st.dgf.logs()));
    println!("{out}");
    (out, st)
}

/// The audit records once `done` holds for them (records are written in the background; dgf
/// is killed, not stopped, at the end of a test), or after 10 s.
fn audit_records(st: &Stack, done: impl Fn(&[serde_json::Value]) -> bool) -> Vec<serde_json::Value> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(&st.audit).unwrap_or_default();
        let recs: Vec<serde_json::Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        if done(&recs) || std::time::Instant::now() > deadline {
            return recs;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// A BSON document of string elements, in order, duplicates allowed (no driver sends those).
fn raw_strings(elems: &[(&str, &str)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (k, v) in elems {
        body.push(0x02);
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(&(v.len() as i32 + 1).to_le_bytes());
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    let mut out = (body.len() as i32 + 5).to_le_bytes().to_vec();
    out.extend(body);
    out.push(0);
    out
}

/// A command whose command field appears twice (`{find: "orders", find: "users"}`) was checked
/// against the first value while the server ran the last: the analyst read clear emails, the
/// admin read `payroll`. It is refused for every role with BadValue (code 2), audited, and the
/// connection stays usable.
#[test]
fn duplicate_command_fields_are_refused() {
    let (_, st) = run_bypass("print('SEEDED')");
    let port = st.port;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        use mongodb::bson::{doc, Document, RawDocumentBuf};
        use mongodb::error::ErrorKind;
        for (user, pw, second) in [("analyst", "analyst-pw", "users"), ("admin", "admin-pw", "payroll")] {
            let uri = format!("mongodb://{user}:{pw}@127.0.0.1:{port}/?directConnection=true");
            let client = mongodb::Client::with_uri_str(&uri).await.expect("client");
            let db = client.database("app");
            let raw = RawDocumentBuf::from_bytes(raw_strings(&[("find", "orders"), ("find", second)])).unwrap();
            let r = db.run_raw_command(raw).await;
            let err = match r {
                Ok(d) => panic!("{user}: a duplicated find ran: {d}"),
                Err(e) => e,
            };
            match *err.kind {
                ErrorKind::Command(ref c) => {
                    assert_eq!(c.code, 2, "{user}: {c:?}");
                    assert!(c.message.contains("'find'") && c.message.contains("more than once"), "{c:?}");
                }
                ref other => panic!("{user}: {other:?}"),
            }
            // The connection stays usable, and governed.
            let got = db.collection::<Document>("users").find_one(doc! {}).await.expect("find after the refusal");
            let email = got.expect("a user").get_str("email").unwrap_or("").to_owned();
            assert_eq!(email.contains("s3cr3t"), user == "admin", "{user}: {email}");
        }
    });
    let refusal = |r: &&serde_json::Value| r["error"] == "2" && r["decision"] == "deny";
    let recs = audit_records(&st, |recs| recs.iter().filter(refusal).count() >= 2);
    let refused: Vec<_> = recs.iter().filter(refusal).collect();
    assert_eq!(refused.len(), 2, "{recs:?}");
    assert!(refused.iter().any(|r| r["user"] == "analyst") && refused.iter().any(|r| r["user"] == "admin"));
}

/// The profiler records every client's commands, literals included (all reach the server as
/// the route's user): a masked role may neither turn it on nor read `system.profile`.
#[test]
fn profiler_is_refused_for_masked_roles() {
    let (out, _st) = run_bypass(
        r#"
attempt("profile-on", lambda: an.app.command("profile", 2))
D.command("profile", 2)
ad.app.users.find_one({"email": "s3cr3t.alice@example.com"})
attempt("profile-find", lambda: list(an.app["system.profile"].find()))
attempt("profile-agg", lambda: list(an.app["system.profile"].aggregate([])))
attempt("profile-union", lambda: list(an.app.orders.aggregate([{"$unionWith": "system.profile"}])))
attempt("profile-level", lambda: an.app.command("profile", -1))
attempt("admin-profile-find", lambda: list(ad.app["system.profile"].find()))
D.command("profile", 0)
"#,
    );
    for label in ["profile-on", "profile-find", "profile-agg", "profile-union"] {
        assert!(out.contains(&format!("{label} DENIED 13 False")), "{label} not refused: {out}");
    }
    assert!(out.contains("profile-level RAN False"), "{out}");
    assert!(out.contains("admin-profile-find RAN True"), "the profile holds the literals: {out}");
}

/// `explain` runs its command's query (`executionStats.nReturned` answers a filter over a
/// denied collection): it is decided and audited as the command it wraps.
#[test]
fn explain_is_governed_as_its_command() {
    let (out, st) = run_bypass(
        r#"
ex = lambda db, c: db.command("explain", c, verbosity="executionStats")
attempt("explain-find", lambda: ex(ad.app, {"find": "payroll", "filter": {"salary": {"$gte": 900000}}}))
attempt("explain-union", lambda: ex(ad.app, {"aggregate": "users", "pipeline": [{"$unionWith": "payroll"}], "cursor": {}}))
attempt("explain-users", lambda: ex(ad.app, {"find": "users", "filter": {}}))
attempt("an-explain-toint", lambda: ex(an.app, {"find": "users", "filter": {"$expr": {"$eq": [{"$toInt": "$email"}, 1]}}}))
attempt("an-explain-upper", lambda: ex(an.app, {"aggregate": "users", "pipeline": [{"$project": {"x": {"$toUpper": "$email"}}}], "cursor": {}}))
"#,
    );
    for label in ["explain-find", "explain-union", "an-explain-toint", "an-explain-upper"] {
        assert!(out.contains(&format!("{label} DENIED 13 False")), "{label} not refused: {out}");
    }
    assert!(out.contains("explain-users RAN"), "{out}");
    let explain = |r: &serde_json::Value| {
        r["user"] == "admin" && r["fingerprint"].as_str().unwrap_or("").starts_with("{explain:{find:\"payroll\"")
    };
    let recs = audit_records(&st, |recs| recs.iter().any(explain));
    let rec = recs.iter().find(|r| explain(r)).unwrap_or_else(|| panic!("no audit of the explain: {recs:?}"));
    assert_eq!(rec["decision"], "deny", "{rec}");
    assert_eq!(rec["objects"], serde_json::json!(["mongodb:app.payroll"]), "{rec}");
}

/// Array positions in a path (`contacts.0.phone`) are masked like the labelled path.
#[test]
fn array_positions_stay_masked() {
    let (out, _st) = run_bypass(
        r#"
U = an.app.users
attempt("distinct-0", lambda: U.distinct("contacts.0.phone"))
attempt("distinct-1-phone", lambda: U.distinct("contacts.1.phone"))
attempt("distinct-1", lambda: U.distinct("contacts.1"))
attempt("projection-0", lambda: list(U.find({}, {"contacts.0.phone": 1})))
attempt("admin-distinct-0", lambda: ad.app.users.distinct("contacts.0.phone"))
"#,
    );
    for label in ["distinct-0", "distinct-1-phone", "distinct-1", "projection-0"] {
        assert!(out.contains(&format!("{label} RAN False")), "{label} leaked or failed: {out}");
    }
    assert!(out.contains("admin-distinct-0 RAN True"), "{out}");
}

/// Operator expressions over masked fields in `$expr` make the server quote the clear value in
/// its error ("Failed to parse number '...'"): refused in every filter, as in `$project`.
#[test]
fn expr_over_masked_fields_is_refused_in_filters() {
    let (out, _st) = run_bypass(
        r#"
U = an.app.users
q = {"$expr": {"$eq": [{"$toInt": "$email"}, 1]}}
attempt("find", lambda: list(U.find(q)))
attempt("find-or", lambda: list(U.find({"$or": [{"_id": 5}, q]})))
attempt("match", lambda: list(U.aggregate([{"$match": q}])))
attempt("count", lambda: an.app.command("count", "users", query=q))
attempt("distinct", lambda: U.distinct("_id", q))
attempt("update", lambda: U.update_one(q, {"$set": {"x": 1}}).raw_result)
attempt("delete", lambda: U.delete_one(q).raw_result)
attempt("findAndModify", lambda: U.find_one_and_update(q, {"$set": {"x": 1}}))
attempt("lookup", lambda: list(an.app.orders.aggregate([{"$lookup": {"from": "users", "pipeline": [{"$match": q}], "as": "u"}}])))
attempt("phone", lambda: list(U.find({"$expr": {"$gt": [{"$toDouble": {"$arrayElemAt": ["$contacts.phone", 0]}}, 0]}})))
attempt("compare", lambda: list(U.find({"$expr": {"$eq": ["$email", "nobody"]}})))
attempt("admin", lambda: list(ad.app.users.find(q)))
"#,
    );
    for label in
        ["find", "find-or", "match", "count", "distinct", "update", "delete", "findAndModify", "lookup", "phone"]
    {
        assert!(format!("\n{out}").contains(&format!("\n{label} DENIED 13 False")), "{label} not refused: {out}");
    }
    assert!(out.contains("compare RAN False []"), "{out}");
    assert!(out.contains("admin DENIED 241 True"), "the server quotes the value: {out}");
}

/// A refusal inside a multi-document transaction fails the transaction, as a failed statement
/// does: before, the commit that followed committed the other statements. A refused first
/// statement leaves nothing upstream, and the transaction fails all the same.
#[test]
fn refusal_inside_a_transaction_aborts_it() {
    let (out, _st) = run_bypass(
        r#"
s = an.start_session()
s.start_transaction()
an.app.orders.insert_one({"_id": 77}, session=s)
try:
    list(an.app.users.aggregate([{"$project": {"x": {"$toUpper": "$email"}}}], session=s))
    print("REFUSAL RAN")
except OperationFailure as e:
    print("REFUSED", e.code, e.details.get("errorLabels"))
try:
    s.commit_transaction()
    print("COMMIT OK")
except OperationFailure as e:
    print("COMMIT FAILED", e.code)
s.end_session()
print("VISIBLE", D.orders.count_documents({"_id": 77}))
# The connection and later transactions work.
with an.start_session() as s2:
    with s2.start_transaction():
        an.app.orders.insert_one({"_id": 78}, session=s2)
print("LATER", D.orders.count_documents({"_id": 78}))
# The refused statement is the transaction's first: nothing runs upstream in it.
s3 = an.start_session()
s3.start_transaction()
try:
    an.app.users.find_one({"$expr": {"$toInt": "$email"}}, session=s3)
    print("FIRST RAN")
except OperationFailure as e:
    print("FIRST REFUSED", e.code)
try:
    an.app.orders.insert_one({"_id": 79}, session=s3)
    s3.commit_transaction()
    print("FIRST COMMIT OK")
except OperationFailure as e:
    print("FIRST COMMIT FAILED", e.code)
print("FIRST VISIBLE", D.orders.count_documents({"_id": 79}))
"#,
    );
    assert!(out.contains("REFUSED 13 None"), "{out}");
    assert!(out.contains("COMMIT FAILED 251"), "{out}");
    assert!(out.contains("\nVISIBLE 0") && out.contains("LATER 1"), "{out}");
    assert!(out.contains("FIRST REFUSED 13\nFIRST COMMIT FAILED 251\nFIRST VISIBLE 0"), "{out}");
}
