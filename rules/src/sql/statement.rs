//! The exhaustive match over sqlparser's `Statement`: kind, written objects and outputs.
//!
//! There is deliberately no `_ =>` arm: a statement kind added by a sqlparser upgrade is a
//! compile error here instead of a silently unclassified (and possibly allowed) statement.

use super::lineage::{Col, Ctx, Star};
use super::names::{self, extend};
use super::{ColumnSource, CopyDirection, DdlKind, StatementKind as K};
use sqlparser::ast::{
    CommentObject, CopySource, CopyTarget, DiscardObject, GrantObjects, ObjectName, ObjectType, Reset, Set,
    ShowCreateObject, Statement, Use,
};

/// Per-statement facts the match produces besides the context.
#[derive(Debug, Default)]
pub(crate) struct Facts {
    pub has_where: bool,
    pub outputs: Vec<Col>,
    pub set_variables: Vec<String>,
}

fn opaque_rows() -> Vec<Col> {
    vec![Col::star(Star::Any, vec![ColumnSource::Opaque])]
}

impl Ctx {
    fn write(&mut self, n: &ObjectName) {
        let (s, t) = names::schema_and_name(n);
        self.add_table(s, t, true);
    }

    fn read(&mut self, n: &ObjectName) {
        let (s, t) = names::schema_and_name(n);
        self.add_table(s, t, false);
    }

    /// Every object of a schema.
    fn write_schema(&mut self, n: &ObjectName) {
        self.add_table(Some(names::parts(n).pop().unwrap_or_default()), "*".into(), true);
    }

    fn grant_objects(&mut self, o: &GrantObjects) {
        use GrantObjects as G;
        match o {
            G::AllSequencesInSchema { schemas }
            | G::AllTablesInSchema { schemas }
            | G::AllViewsInSchema { schemas }
            | G::AllMaterializedViewsInSchema { schemas }
            | G::AllExternalTablesInSchema { schemas }
            | G::FutureTablesInSchema { schemas }
            | G::FutureViewsInSchema { schemas }
            | G::FutureExternalTablesInSchema { schemas }
            | G::FutureMaterializedViewsInSchema { schemas }
            | G::FutureSequencesInSchema { schemas }
            | G::Schemas(schemas) => schemas.iter().for_each(|s| self.write_schema(s)),
            G::Tables(v) | G::Views(v) | G::Sequences(v) => v.iter().for_each(|n| self.write(n)),
            _ => {}
        }
    }

    fn set_var(&mut self, f: &mut Facts, var: &ObjectName, values: &[&sqlparser::ast::Expr]) -> bool {
        let name = names::parts(var).join(".");
        let lower = name.to_lowercase();
        let user_var = name.starts_with('@') && !name.starts_with("@@");
        for v in values {
            let s = self.expr(v);
            if user_var {
                self.assigns_user_variable = true;
                extend(&mut self.written, s);
            }
        }
        let last = lower.rsplit('.').next().unwrap_or("").trim_start_matches('@').to_string();
        f.set_variables.push(lower);
        matches!(last.as_str(), "role" | "session_authorization")
    }

    /// Classify one statement, recording tables, functions and effects in `self`.
    pub(crate) fn statement(&mut self, st: &Statement, f: &mut Facts) -> K {
        match st {
            Statement::Query(q) => {
                f.outputs = self.query(q);
                K::Select
            }
            Statement::Insert(i) => {
                f.outputs = self.insert(i);
                K::Insert
            }
            Statement::Update(u) => {
                f.has_where = u.selection.is_some();
                f.outputs = self.update(u);
                K::Update
            }
            Statement::Delete(d) => {
                f.has_where = d.selection.is_some();
                f.outputs = self.delete(d);
                K::Delete
            }
            Statement::Merge(m) => {
                f.outputs = self.merge(m);
                K::Merge
            }
            Statement::Copy { source, to, target, .. } => {
                match source {
                    CopySource::Table { table_name, columns } => {
                        let (schema, table) = names::schema_and_name(table_name);
                        self.add_table(schema.clone(), table.clone(), !to);
                        if *to {
                            f.outputs = if columns.is_empty() {
                                let src = ColumnSource::AllColumnsOf { schema, table };
                                vec![Col::star(Star::Narrow, vec![src])]
                            } else {
                                columns
                                    .iter()
                                    .map(|c| {
                                        let column = names::ident(c);
                                        let src = ColumnSource::Column {
                                            schema: schema.clone(),
                                            table: table.clone(),
                                            column: column.clone(),
                                        };
                                        Col::named(column, true, vec![src])
                                    })
                                    .collect()
                            };
                        }
                    }
                    CopySource::Query(q) => f.outputs = self.query(q),
                }
                let to_program = matches!(target, CopyTarget::Program { .. });
                if matches!(target, CopyTarget::Program { .. } | CopyTarget::File { .. }) {
                    self.server_io = true;
                    for c in &f.outputs {
                        extend(&mut self.written, c.sources.iter().cloned());
                    }
                    f.outputs.clear();
                }
                K::Copy { to_program, direction: if *to { CopyDirection::To } else { CopyDirection::From } }
            }
            Statement::CopyIntoSnowflake { into, from_obj, from_query, .. } => {
                self.write(into);
                if let Some(o) = from_obj {
                    self.read(o);
                }
                if let Some(q) = from_query {
                    let _ = self.query(q);
                }
                self.server_io = true;
                K::Copy { to_program: false, direction: CopyDirection::From }
            }
            Statement::LoadData { table_name, local, .. } => {
                self.write(table_name);
                self.server_io |= !local;
                K::Copy { to_program: false, direction: CopyDirection::From }
            }
            Statement::Truncate(t) => {
                t.table_names.iter().for_each(|x| self.write(&x.name));
                K::Truncate
            }
            Statement::Drop { object_type, names: ns, table, .. } => {
                for n in ns {
                    match object_type {
                        ObjectType::Schema | ObjectType::Database => self.write_schema(n),
                        ObjectType::Role | ObjectType::User | ObjectType::Group | ObjectType::Warehouse => {}
                        _ => self.write(n),
                    }
                }
                if let Some(t) = table {
                    self.write(t);
                }
                K::Drop
            }
            Statement::DropPolicy(p) => {
                self.write(&p.table_name);
                K::Drop
            }
            Statement::DropRule(r) => {
                self.write(&r.table_name);
                K::Drop
            }
            Statement::DropTrigger(t) => {
                if let Some(n) = &t.table_name {
                    self.write(n);
                }
                K::Drop
            }
            Statement::DropFunction(_)
            | Statement::DropDomain(_)
            | Statement::DropProcedure { .. }
            | Statement::DropSecret { .. }
            | Statement::DropConnector { .. }
            | Statement::DropExtension(_)
            | Statement::DropOperator(_)
            | Statement::DropOperatorFamily(_)
            | Statement::DropOperatorClass(_) => K::Drop,
            Statement::CreateTable(c) => {
                self.write(&c.name);
                if let Some(q) = &c.query {
                    for col in self.query(q) {
                        extend(&mut self.written, col.sources);
                    }
                    self.add_effect(K::Insert);
                }
                K::Ddl(DdlKind::Create)
            }
            Statement::CreateView(v) => {
                self.write(&v.name);
                for col in self.query(&v.query) {
                    extend(&mut self.written, col.sources);
                }
                K::Ddl(DdlKind::Create)
            }
            Statement::CreateVirtualTable { name, .. } => {
                self.write(name);
                K::Ddl(DdlKind::Create)
            }
            Statement::CreateIndex(c) => {
                self.write(&c.table_name);
                K::Ddl(DdlKind::Create)
            }
            Statement::CreateForeignTable(c) => {
                self.write(&c.name);
                K::Ddl(DdlKind::Create)
            }
            Statement::CreatePolicy(p) => {
                self.write(&p.table_name);
                K::Ddl(DdlKind::Create)
            }
            Statement::CreateRule(r) => {
                self.write(&r.table_name);
                K::Ddl(DdlKind::Create)
            }
            Statement::CreateTrigger(t) => {
                self.write(&t.table_name);
                K::Ddl(DdlKind::Create)
            }
            Statement::CreateSequence { name, .. } => {
                self.write(name);
                K::Ddl(DdlKind::Create)
            }
            Statement::CreateRole(_)
            | Statement::CreateServer(_)
            | Statement::CreateForeignDataWrapper(_)
            | Statement::CreateUserMapping(_)
            | Statement::CreateConnector(_)
            | Statement::CreateOperator(_)
            | Statement::CreateOperatorFamily(_)
            | Statement::CreateOperatorClass(_)
            | Statement::CreateTextSearch(_)
            | Statement::CreateAggregate(_)
            | Statement::CreateExtension(_)
            | Statement::CreateCollation(_)
            | Statement::CreateSchema { .. }
            | Statement::CreateDatabase { .. }
            | Statement::CreateFunction(_)
            | Statement::CreateProcedure { .. }
            | Statement::CreateMacro { .. }
            | Statement::CreateStage { .. }
            | Statement::CreateFileFormat { .. }
            | Statement::CreateWarehouse(_)
            | Statement::CreateDomain(_)
            | Statement::CreateType { .. }
            | Statement::CreateUser(_) => K::Ddl(DdlKind::Create),
            Statement::AlterTable(a) => {
                self.write(&a.name);
                K::Ddl(DdlKind::Alter)
            }
            Statement::AlterView(v) => {
                self.write(&v.name);
                K::Ddl(DdlKind::Alter)
            }
            Statement::AlterIndex { name, .. } => {
                self.write(name);
                K::Ddl(DdlKind::Alter)
            }
            Statement::AlterPolicy(p) => {
                self.write(&p.table_name);
                K::Ddl(DdlKind::Alter)
            }
            Statement::AlterTrigger(t) => {
                self.write(&t.table_name);
                K::Ddl(DdlKind::Alter)
            }
            Statement::AlterSchema(_)
            | Statement::AlterFunction(_)
            | Statement::AlterType(_)
            | Statement::AlterCollation(_)
            | Statement::AlterOperator(_)
            | Statement::AlterOperatorFamily(_)
            | Statement::AlterOperatorClass(_)
            | Statement::AlterTextSearch(_)
            | Statement::AlterRole { .. }
            | Statement::AlterConnector { .. }
            | Statement::AlterUser(_) => K::Ddl(DdlKind::Alter),
            Statement::AlterSession { .. } => K::Set { role_change: false },
            Statement::AlterDefaultPrivileges(_) => K::Ddl(DdlKind::Grant),
            Statement::Comment { object_type, object_name, .. } => {
                match object_type {
                    CommentObject::Table
                    | CommentObject::View
                    | CommentObject::MaterializedView
                    | CommentObject::ForeignTable
                    | CommentObject::Sequence
                    | CommentObject::Index => self.write(object_name),
                    CommentObject::Column => {
                        let mut p = object_name.0.clone();
                        p.pop();
                        if !p.is_empty() {
                            self.write(&ObjectName(p));
                        }
                    }
                    _ => {}
                }
                K::Ddl(DdlKind::Comment)
            }
            Statement::Grant(g) => {
                if let Some(o) = &g.objects {
                    self.grant_objects(o);
                }
                K::Ddl(DdlKind::Grant)
            }
            Statement::Revoke(r) => {
                if let Some(o) = &r.objects {
                    self.grant_objects(o);
                }
                K::Ddl(DdlKind::Revoke)
            }
            Statement::Deny(d) => {
                self.grant_objects(&d.objects);
                K::Ddl(DdlKind::Revoke)
            }
            Statement::GrantRole(_) => K::Ddl(DdlKind::Grant),
            Statement::RevokeRole(_) => K::Ddl(DdlKind::Revoke),
            Statement::RenameTable(v) => {
                for r in v {
                    self.write(&r.old_name);
                    self.write(&r.new_name);
                }
                K::Ddl(DdlKind::Rename)
            }
            Statement::RefreshMaterializedView(r) => {
                self.write(&r.name);
                K::Ddl(DdlKind::Other)
            }
            Statement::Set(s) => self.set(s, f),
            Statement::Reset(r) => {
                let (var, role) = match &r.reset {
                    // RESET ALL leaves the role alone (and a role given as a startup option
                    // is what it would return to anyway): not a role change.
                    Reset::ALL => ("all".to_string(), false),
                    Reset::SessionAuthorization => ("session_authorization".to_string(), true),
                    Reset::ConfigurationParameter(n) => {
                        let v = names::parts(n).join(".").to_lowercase();
                        let role = v == "role" || v == "session_authorization";
                        (v, role)
                    }
                };
                f.set_variables.push(var);
                K::Set { role_change: role }
            }
            Statement::Discard { object_type } => {
                if matches!(object_type, DiscardObject::ALL) {
                    // SET SESSION AUTHORIZATION DEFAULT + RESET ALL: back to the login user and
                    // its defaults, which dgf's upstream login is anyway (SET ROLE is refused).
                    // asyncpg's and pools' reset queries send it.
                    f.set_variables.push("all".into());
                    K::Set { role_change: false }
                } else {
                    K::Other("discard".into())
                }
            }
            Statement::Use(u) => match u {
                Use::Role(_) | Use::SecondaryRoles(_) => {
                    f.set_variables.push("role".into());
                    K::Set { role_change: true }
                }
                Use::Schema(_) => {
                    f.set_variables.push("schema".into());
                    K::Use
                }
                _ => {
                    f.set_variables.push("database".into());
                    K::Use
                }
            },
            Statement::StartTransaction { statements, .. } => {
                for s in statements {
                    self.nested(s);
                }
                K::Transaction
            }
            Statement::Commit { .. }
            | Statement::Rollback { .. }
            | Statement::Savepoint { .. }
            | Statement::ReleaseSavepoint { .. } => K::Transaction,
            Statement::ShowCreate { obj_type, obj_name } => {
                if matches!(obj_type, ShowCreateObject::Table | ShowCreateObject::View) {
                    self.read(obj_name);
                }
                K::Show
            }
            Statement::ShowProcessList { .. } => {
                // The statements of every session: what `information_schema.processlist` holds.
                self.add_table(Some("information_schema".into()), "processlist".into(), false);
                K::Show
            }
            Statement::ExplainTable { table_name, .. } => {
                self.read(table_name);
                K::Show
            }
            Statement::ShowFunctions { .. }
            | Statement::ShowVariable { .. }
            | Statement::ShowStatus { .. }
            | Statement::ShowVariables { .. }
            | Statement::ShowColumns { .. }
            | Statement::ShowCatalogs { .. }
            | Statement::ShowDatabases { .. }
            | Statement::ShowSchemas { .. }
            | Statement::ShowCharset(_)
            | Statement::ShowObjects(_)
            | Statement::ShowTables { .. }
            | Statement::ShowViews { .. }
            | Statement::ShowCollation { .. } => K::Show,
            Statement::Explain { analyze, statement, .. } => {
                let inner = self.nested_kind(statement);
                if *analyze {
                    self.add_effect(inner);
                }
                K::Explain
            }
            Statement::Prepare { statement, .. } => {
                let inner = self.nested_kind(statement);
                self.add_effect(inner);
                K::Prepare
            }
            Statement::Execute { name, parameters, immediate, using, .. } => {
                parameters.iter().for_each(|e| self.walk(e));
                using.iter().for_each(|e| self.walk(&e.expr));
                f.outputs = opaque_rows();
                if *immediate || name.is_none() {
                    K::Unknown
                } else {
                    K::Execute
                }
            }
            Statement::Call(func) => {
                let _ = self.function(func);
                f.outputs = opaque_rows();
                K::Call
            }
            Statement::Declare { stmts, .. } => {
                for d in stmts {
                    if let Some(q) = &d.for_query {
                        let _ = self.query(q);
                        self.add_effect(K::Select);
                    }
                }
                K::Other("declare".into())
            }
            Statement::Fetch { .. } => {
                f.outputs = opaque_rows();
                K::Other("fetch".into())
            }
            Statement::Directory { source, .. } => {
                for c in self.query(source) {
                    extend(&mut self.written, c.sources);
                }
                self.server_io = true;
                K::Other("insert overwrite directory".into())
            }
            Statement::Unload { query, .. } => {
                if let Some(q) = query {
                    for c in self.query(q) {
                        extend(&mut self.written, c.sources);
                    }
                }
                self.server_io = true;
                K::Other("unload".into())
            }
            Statement::ExportData(_) => {
                self.server_io = true;
                K::Other("export data".into())
            }
            Statement::AttachDatabase { .. }
            | Statement::AttachDuckDBDatabase { .. }
            | Statement::DetachDuckDBDatabase { .. }
            | Statement::Put { .. }
            | Statement::List(_)
            | Statement::Remove(_)
            | Statement::CreateSecret { .. } => {
                self.server_io = true;
                K::Other(stmt_name(st))
            }
            Statement::Analyze(a) => {
                if let Some(t) = &a.table_name {
                    self.read(t);
                }
                K::Other("analyze".into())
            }
            Statement::Vacuum(v) => {
                if let Some(t) = &v.table_name {
                    self.read(t);
                }
                K::Other("vacuum".into())
            }
            Statement::Lock(l) => {
                l.tables.iter().for_each(|t| self.read(&t.name));
                K::Other("lock".into())
            }
            Statement::Msck(_)
            | Statement::Install { .. }
            | Statement::Load { .. }
            | Statement::Open(_)
            | Statement::Close { .. }
            | Statement::Deallocate { .. }
            | Statement::Kill { .. }
            | Statement::Flush { .. }
            | Statement::Cache { .. }
            | Statement::UNCache { .. }
            | Statement::Pragma { .. }
            | Statement::LockTables { .. }
            | Statement::UnlockTables
            | Statement::OptimizeTable { .. }
            | Statement::LISTEN { .. }
            | Statement::UNLISTEN { .. }
            | Statement::NOTIFY { .. } => K::Other(stmt_name(st)),
            // Procedural blocks of other dialects: their bodies are code we do not model.
            Statement::Case(_)
            | Statement::If(_)
            | Statement::While(_)
            | Statement::Raise(_)
            | Statement::RaisError { .. }
            | Statement::Throw(_)
            | Statement::Print(_)
            | Statement::WaitFor(_)
            | Statement::Return(_)
            | Statement::Assert { .. } => {
                f.outputs = opaque_rows();
                K::Unknown
            }
        }
    }

    fn set(&mut self, s: &Set, f: &mut Facts) -> K {
        let mut role = false;
        match s {
            Set::SingleAssignment { variable, values, .. } => {
                let v: Vec<_> = values.iter().collect();
                role |= self.set_var(f, variable, &v);
            }
            Set::ParenthesizedAssignments { variables, values } => {
                let v: Vec<_> = values.iter().collect();
                for var in variables {
                    role |= self.set_var(f, var, &v);
                }
            }
            Set::MultipleAssignments { assignments } => {
                for a in assignments {
                    role |= self.set_var(f, &a.name, &[&a.value]);
                }
            }
            Set::SetSessionAuthorization(_) => {
                f.set_variables.push("session_authorization".into());
                role = true;
            }
            Set::SetRole { .. } => {
                f.set_variables.push("role".into());
                role = true;
            }
            Set::SetSessionParam(_) => f.set_variables.push("session_param".into()),
            Set::SetTimeZone { value, .. } => {
                self.walk(value);
                f.set_variables.push("timezone".into());
            }
            Set::SetNames { .. } | Set::SetNamesDefault {} => f.set_variables.push("names".into()),
            Set::SetTransaction { .. } => f.set_variables.push("transaction".into()),
        }
        K::Set { role_change: role }
    }

    /// Analyse a statement nested in another one (EXPLAIN, PREPARE, BEGIN ... END) into the
    /// same context and return its kind.
    fn nested_kind(&mut self, st: &Statement) -> K {
        self.statement(st, &mut Facts::default())
    }

    fn nested(&mut self, st: &Statement) {
        let k = self.nested_kind(st);
        self.add_effect(k);
    }
}

/// Lower-case statement name from its first keywords (for `Other`).
fn stmt_name(st: &Statement) -> String {
    let s = st.to_string();
    let mut it = s.split_whitespace();
    let first = it.next().unwrap_or("").to_lowercase();
    match first.as_str() {
        "lock" | "unlock" | "attach" | "detach" => {
            format!("{first} {}", it.next().unwrap_or("").to_lowercase()).trim().to_string()
        }
        _ => first,
    }
}
