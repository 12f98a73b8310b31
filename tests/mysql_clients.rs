//! MySQL route with more real clients: PyMySQL and mysql-connector-python (both auth methods,
//! caching_sha2_password fast path and full authentication over TLS, server-side prepared
//! statements), and client-side TLS with the `mysql` CLI.

mod common;

use common::my::{my_config, mysql_cli, python, MyDb};
use common::pg_instance::make_certs;
use common::{free_port, Dgf};

#[test]
fn pymysql_queries_multi_statements_and_params() {
    let db = MyDb::create();
    let port = free_port();
    let _d = Dgf::start(&my_config(port, &db.upstream(), "{ size = 2 }", ""), &[port]);
    let code = format!(
        r#"
import pymysql
from pymysql.constants import CLIENT
c = pymysql.connect(host="127.0.0.1", port={port}, user="app", password="app_pw", database="{db}",
                    autocommit=True, client_flag=CLIENT.MULTI_STATEMENTS)
cur = c.cursor()
cur.execute("CREATE TABLE p (id INT PRIMARY KEY, name VARCHAR(50), amount DECIMAL(10,2))")
cur.executemany("INSERT INTO p VALUES (%s, %s, %s)", [(i, "n%d" % i, i * 1.5) for i in range(50)])
cur.execute("SELECT COUNT(*), SUM(amount) FROM p WHERE name LIKE %s", ("n1%",))
print(cur.fetchone())
cur.execute("SELECT 1; SELECT 'two'")
a = cur.fetchall(); cur.nextset(); b = cur.fetchall()
print(a, b)
try:
    cur.execute("SELECT * FROM nope")
except pymysql.err.ProgrammingError as e:
    print("err", e.args[0])
cur.execute("SELECT name FROM p WHERE id = %s", (7,))
print(cur.fetchone()[0])
"#,
        db = db.name
    );
    let out = python(&code).unwrap();
    assert_eq!(out, "(11, Decimal('219.00'))\n((1,),) (('two',),)\nerr 1146\nn7");
}

/// A client without CLIENT_MULTI_STATEMENTS turns them off on the server connection it uses;
/// the reset before the next client must turn them back on (it used to leave them off, so every
/// later multi-statement query on that connection failed with 1064).
#[test]
fn multi_statements_work_after_a_client_without_them() {
    let db = MyDb::create();
    let port = free_port();
    let _d = Dgf::start(&my_config(port, &db.upstream(), "{ size = 1 }", ""), &[port]);
    let code = format!(
        r#"
import pymysql
from pymysql.constants import CLIENT
for flag in [CLIENT.MULTI_STATEMENTS, 0, CLIENT.MULTI_STATEMENTS, 0, CLIENT.MULTI_STATEMENTS]:
    c = pymysql.connect(host="127.0.0.1", port={port}, user="app", password="app_pw", database="{db}",
                        client_flag=flag)
    cur = c.cursor()
    if flag:
        cur.execute("SELECT 1; SELECT 2")
        a = cur.fetchall(); cur.nextset(); print(a, cur.fetchall())
    else:
        try:
            cur.execute("SELECT 1; SELECT 2")
            print("single: multi accepted")
        except pymysql.err.ProgrammingError as e:
            print("single:", e.args[0])
    c.close()
"#,
        db = db.name
    );
    let out = python(&code).unwrap();
    let multi = "((1,),) ((2,),)";
    assert_eq!(out, [multi, "single: 1064", multi, "single: 1064", multi].join("\n"));
}

/// A client character set whose multi-byte characters can end in a `\` or quote byte is
/// refused at login (dgf would not read statements as the server does); utf8mb4 works.
#[test]
fn multi_byte_client_charsets_that_hide_quotes_are_refused() {
    let db = MyDb::create();
    let port = free_port();
    let _d = Dgf::start(&my_config(port, &db.upstream(), "{ size = 1 }", ""), &[port]);
    let code = format!(
        r#"
import pymysql
for cs in ["gbk", "sjis", "utf8mb4"]:
    try:
        c = pymysql.connect(host="127.0.0.1", port={port}, user="app", password="app_pw", database="{db}", charset=cs)
        cur = c.cursor(); cur.execute("SELECT 1"); print(cs, cur.fetchone()[0]); c.close()
    except pymysql.err.OperationalError as e:
        print(cs, e.args[0])
"#,
        db = db.name
    );
    assert_eq!(python(&code).unwrap(), "gbk 1115\nsjis 1115\nutf8mb4 1");
}

#[test]
fn connector_python_both_auth_methods_and_prepared_cursor() {
    let db = MyDb::create();
    let port = free_port();
    let _d = Dgf::start(&my_config(port, &db.upstream(), "{ size = 2 }", ""), &[port]);
    let code = format!(
        r#"
import mysql.connector
for plugin in ("mysql_native_password", "caching_sha2_password"):
    c = mysql.connector.connect(host="127.0.0.1", port={port}, user="app", password="app_pw",
                                database="{db}", auth_plugin=plugin, use_pure=True, autocommit=True)
    cur = c.cursor(prepared=True)
    cur.execute("SELECT ? + ?, CONCAT(?, 'x')", (40, 2, plugin[:5]))
    print(plugin, cur.fetchone())
    # a file-like parameter goes through COM_STMT_SEND_LONG_DATA
    import io
    cur.execute("SELECT LENGTH(?), ?", (io.BytesIO(b"z" * 300000), 5))
    print(cur.fetchone())
    c.close()
try:
    mysql.connector.connect(host="127.0.0.1", port={port}, user="app", password="bad", database="{db}",
                            auth_plugin="caching_sha2_password", use_pure=True)
except mysql.connector.Error as e:
    print("denied", e.errno)
"#,
        db = db.name
    );
    let out = python(&code).unwrap();
    assert_eq!(out, "mysql_native_password (42, 'mysqlx')\n(300000, 5)\ncaching_sha2_password (42, 'cachix')\n(300000, 5)\ndenied 1045");
}

#[test]
fn tls_for_clients_and_caching_sha2_full_auth() {
    let db = MyDb::create();
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = make_certs(dir.path(), &["localhost", "127.0.0.1"]);
    let port = free_port();
    let extra = format!(
        "require_tls = true\ntls = {{ cert = \"{cert}\", key = \"{key}\" }}\noptions = {{ caching_sha2_full_auth = \"always\" }}"
    );
    let _d = Dgf::start(&my_config(port, &db.upstream(), "{ size = 2 }", &extra), &[port]);
    let p = port.to_string();
    // mysql CLI over TLS, verifying dgf's certificate
    let ssl_ca = format!("--ssl-ca={ca}");
    let out =
        mysql_cli(&["-P", &p, "-u", "app", "-papp_pw", "--ssl", &ssl_ca, "--ssl-verify-server-cert"], "SELECT 7*6")
            .unwrap();
    assert_eq!(out, "42");
    // without TLS the route refuses
    let e = mysql_cli(&["-P", &p, "-u", "app", "-papp_pw", "--skip-ssl"], "SELECT 1").unwrap_err();
    assert!(e.contains("3159") && e.contains("requires TLS"), "{e}");
    // caching_sha2_password full authentication: cleartext password inside TLS
    let code = format!(
        r#"
import mysql.connector
c = mysql.connector.connect(host="127.0.0.1", port={port}, user="app", password="app_pw", database="{db}",
                            auth_plugin="caching_sha2_password", use_pure=True, ssl_ca="{ca}", ssl_verify_cert=True)
cur = c.cursor(); cur.execute("SELECT 'full'"); print(cur.fetchone()[0])
try:
    mysql.connector.connect(host="127.0.0.1", port={port}, user="app", password="wrong", database="{db}",
                            auth_plugin="caching_sha2_password", use_pure=True, ssl_ca="{ca}")
except mysql.connector.Error as e:
    print("denied", e.errno)
"#,
        db = db.name
    );
    assert_eq!(python(&code).unwrap(), "full\ndenied 1045");
}

#[test]
fn caching_sha2_full_auth_over_rsa_without_tls() {
    let db = MyDb::create();
    let dir = tempfile::tempdir().unwrap();
    // a PKCS#1 key file, as MySQL's own tooling writes them
    let key = dir.path().join("private.pem");
    let public = dir.path().join("public.pem");
    let ok = std::process::Command::new("openssl")
        .args(["genrsa", "-traditional", "-out"])
        .arg(&key)
        .arg("2048")
        .status()
        .unwrap()
        .success();
    assert!(ok, "openssl genrsa");
    let ok = std::process::Command::new("openssl")
        .args(["rsa", "-pubout", "-in"])
        .arg(&key)
        .arg("-out")
        .arg(&public)
        .status();
    assert!(ok.unwrap().success(), "openssl rsa -pubout");
    let key_text = std::fs::read_to_string(&key).unwrap();
    assert!(key_text.starts_with("-----BEGIN RSA PRIVATE KEY-----"), "{key_text}");
    for key_option in [String::new(), format!(", rsa_private_key = \"{}\"", key.display())] {
        let port = free_port();
        let extra = format!(
            "options = {{ caching_sha2_full_auth = \"always\", default_auth = \"caching_sha2_password\"{key_option} }}"
        );
        let _d = Dgf::start(&my_config(port, &db.upstream(), "{ size = 2 }", &extra), &[port]);
        // PyMySQL follows the greeting's plugin; without TLS it asks dgf for the public key
        // (or uses the one it was given) and sends RSA-OAEP(password XOR scramble)
        let pinned = if key_option.is_empty() {
            "None".to_owned()
        } else {
            format!("open(\"{}\", \"rb\").read()", public.display())
        };
        let code = format!(
            r#"
import pymysql
c = pymysql.connect(host="127.0.0.1", port={port}, user="app", password="app_pw", database="{db}",
                    server_public_key={pinned})
cur = c.cursor(); cur.execute("SELECT 'rsa', CURRENT_USER() IS NOT NULL"); print(cur.fetchone())
try:
    pymysql.connect(host="127.0.0.1", port={port}, user="app", password="wrong", database="{db}")
except pymysql.err.OperationalError as e:
    print("denied", e.args[0])
"#,
            db = db.name
        );
        assert_eq!(python(&code).unwrap(), "('rsa', 1)\ndenied 1045", "{key_option}");
        // the mysql CLI (MariaDB Connector/C) without TLS, asking for the server's key
        let p = port.to_string();
        let args = ["-P", &p, "-u", "app", "--skip-ssl", "--default-auth=caching_sha2_password"];
        let out = mysql_cli(&[&args[..], &["-papp_pw"]].concat(), "SELECT 'cli-rsa'").unwrap();
        assert_eq!(out, "cli-rsa");
        let e = mysql_cli(&[&args[..], &["-pwrong"]].concat(), "SELECT 1").unwrap_err();
        assert!(e.contains("1045"), "{e}");
    }
}
