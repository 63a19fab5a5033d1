//! Exhaustive walk of a libpg_query parse tree, collecting what matters for
//! routing: every function name called, every operator name used, and the
//! presence of data-modifying statements, locking clauses, `INTO` clauses and
//! temporary relations anywhere in the tree.
//!
//! The walk drives the `serde::Serialize` impls that `pg_query` derives on its
//! protobuf structs through a serializer that outputs nothing. That reaches
//! every field of every node type (subqueries, CTEs, join quals, default
//! expressions, window definitions ...), including node types added by later
//! libpg_query versions, where a hand-written walker would silently skip what
//! it does not know. Struct and field names are those of the Rust structs
//! (`FuncCall.funcname`, `RangeVar.relpersistence`).
//!
//! Hazard: if a future `pg_query` renamed these structs, the walk would see
//! nothing; the table test (`tests/classify_table.rs`) catches that.

use serde::ser::{self, Serialize};

/// A called function: its name parts as written (`[schema, name]` or `[name]`,
/// or `[catalog, schema, name]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FuncName(pub Vec<String>);

impl FuncName {
    /// The function's own name (last part).
    pub fn name(&self) -> &str {
        self.0.last().map(String::as_str).unwrap_or("")
    }

    /// The schema, when qualified.
    pub fn schema(&self) -> Option<&str> {
        let n = self.0.len();
        (n >= 2).then(|| self.0[n - 2].as_str())
    }
}

/// A relation named in a `RangeVar` (FROM item, DML target, ...): its
/// schema when qualified, and its name, as the parser folded them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelName {
    pub schema: Option<String>,
    pub name: String,
}

/// What the walk found in one statement tree.
#[derive(Debug, Default)]
pub struct Features {
    pub functions: Vec<FuncName>,
    /// Every relation named (RangeVar), in tree order.
    pub relations: Vec<RelName>,
    /// One entry per `current_setting(...)` call: the setting's name when the
    /// first argument is a plain string constant (and any second argument a
    /// constant too), else `None`.
    pub settings: Vec<Option<String>>,
    pub operators: Vec<String>,
    /// INSERT/UPDATE/DELETE/MERGE anywhere (including data-modifying CTEs).
    pub dml: bool,
    /// FOR UPDATE / SHARE / NO KEY UPDATE / KEY SHARE anywhere.
    pub locking: bool,
    /// SELECT INTO / CREATE TABLE AS target.
    pub into: bool,
    /// A relation declared TEMP, or named in a `pg_temp` schema.
    pub temp: bool,
    /// A statement node other than SELECT or RETURN anywhere (for SQL
    /// function bodies).
    pub other_statement: bool,
}

/// Walk `node` (any pg_query protobuf value) and collect its features.
pub fn features<T: Serialize + ?Sized>(node: &T) -> Features {
    let mut walker = Walker::default();
    // The walker never fails; an error would only mean an unexpected shape,
    // in which case the features gathered so far are still a lower bound.
    let _ = node.serialize(&mut walker);
    walker.found
}

#[derive(Default)]
struct Walker {
    found: Features,
    /// Struct names from the root to the current struct.
    structs: Vec<&'static str>,
    /// While `Some`, strings seen are collected here.
    collect: Option<Vec<String>>,
    /// While `Some`, set to true when a struct other than the pieces of a
    /// constant (`Node`, `AConst`, `String`, `Boolean`) is entered.
    not_constant: Option<bool>,
}

impl Walker {
    fn current(&self) -> &'static str {
        self.structs.last().copied().unwrap_or("")
    }

    fn enter(&mut self, name: &'static str) {
        match name {
            "InsertStmt" | "UpdateStmt" | "DeleteStmt" | "MergeStmt" => self.found.dml = true,
            "LockingClause" => self.found.locking = true,
            "IntoClause" => self.found.into = true,
            "RangeVar" => self.found.relations.push(RelName::default()),
            "SelectStmt" | "ReturnStmt" | "RawStmt" => {}
            _ if name.ends_with("Stmt") => self.found.other_statement = true,
            _ => {}
        }
        if let Some(flag) = self.not_constant.as_mut() {
            *flag |= !matches!(name, "Node" | "AConst" | "String" | "Boolean");
        }
        self.structs.push(name);
    }

    /// Serialize `value` collecting the strings it contains.
    fn strings<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<Vec<String>, WalkError> {
        let outer = self.collect.replace(Vec::new());
        let result = value.serialize(&mut *self);
        let got = std::mem::replace(&mut self.collect, outer).unwrap_or_default();
        result.map(|()| got)
    }

    fn field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), WalkError> {
        match (self.current(), key) {
            ("FuncCall", "funcname") => {
                let parts = self.strings(value)?;
                self.found.functions.push(FuncName(parts));
            }
            ("FuncCall", "args")
                if self
                    .found
                    .functions
                    .last()
                    .is_some_and(|f| f.name() == "current_setting") =>
            {
                let outer = self.not_constant.replace(false);
                let strings = self.strings(value)?;
                let complex = std::mem::replace(&mut self.not_constant, outer).unwrap_or(true);
                let setting = match strings.as_slice() {
                    [name] if !complex => Some(name.clone()),
                    _ => None,
                };
                if let Some(flag) = self.not_constant.as_mut() {
                    *flag = true;
                }
                self.found.settings.push(setting);
            }
            ("AExpr", "name") => {
                let parts = self.strings(value)?;
                self.found.operators.extend(parts.into_iter().last());
            }
            ("RangeVar", "relpersistence") => {
                if self.strings(value)?.iter().any(|p| p == "t") {
                    self.found.temp = true;
                }
            }
            ("RangeVar", "schemaname") => {
                let schema = self.strings(value)?.into_iter().next().unwrap_or_default();
                if schema.starts_with("pg_temp") {
                    self.found.temp = true;
                }
                if let Some(r) = self.found.relations.last_mut() {
                    r.schema = (!schema.is_empty()).then_some(schema);
                }
            }
            ("RangeVar", "relname") => {
                let name = self.strings(value)?.into_iter().next().unwrap_or_default();
                if let Some(r) = self.found.relations.last_mut() {
                    r.name = name;
                }
            }
            _ => value.serialize(&mut *self)?,
        }
        Ok(())
    }
}

/// Never produced in practice; required by the serde traits.
#[derive(Debug)]
pub struct WalkError(String);

impl std::fmt::Display for WalkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for WalkError {}

impl ser::Error for WalkError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        WalkError(msg.to_string())
    }
}

macro_rules! ignore {
    ($($method:ident($ty:ty)),* $(,)?) => {
        $(fn $method(self, _v: $ty) -> Result<(), WalkError> { Ok(()) })*
    };
}

impl ser::Serializer for &mut Walker {
    type Ok = ();
    type Error = WalkError;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Self;
    type SerializeMap = Self;
    type SerializeStruct = Self;
    type SerializeStructVariant = Self;

    ignore!(
        serialize_bool(bool),
        serialize_i8(i8),
        serialize_i16(i16),
        serialize_i32(i32),
        serialize_i64(i64),
        serialize_u8(u8),
        serialize_u16(u16),
        serialize_u32(u32),
        serialize_u64(u64),
        serialize_f32(f32),
        serialize_f64(f64),
        serialize_char(char),
        serialize_bytes(&[u8]),
        serialize_unit_struct(&'static str),
    );

    fn serialize_str(self, v: &str) -> Result<(), WalkError> {
        if let Some(collected) = self.collect.as_mut() {
            collected.push(v.to_owned());
        }
        Ok(())
    }

    fn serialize_none(self) -> Result<(), WalkError> {
        Ok(())
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), WalkError> {
        value.serialize(self)
    }

    fn serialize_unit(self) -> Result<(), WalkError> {
        Ok(())
    }

    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
    ) -> Result<(), WalkError> {
        Ok(())
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), WalkError> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        value: &T,
    ) -> Result<(), WalkError> {
        value.serialize(self)
    }

    fn serialize_seq(self, _: Option<usize>) -> Result<Self, WalkError> {
        Ok(self)
    }

    fn serialize_tuple(self, _: usize) -> Result<Self, WalkError> {
        Ok(self)
    }

    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self, WalkError> {
        Ok(self)
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self, WalkError> {
        Ok(self)
    }

    fn serialize_map(self, _: Option<usize>) -> Result<Self, WalkError> {
        Ok(self)
    }

    fn serialize_struct(self, name: &'static str, _: usize) -> Result<Self, WalkError> {
        self.enter(name);
        Ok(self)
    }

    fn serialize_struct_variant(
        self,
        name: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self, WalkError> {
        self.enter(name);
        Ok(self)
    }
}

impl ser::SerializeSeq for &mut Walker {
    type Ok = ();
    type Error = WalkError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), WalkError> {
        value.serialize(&mut **self)
    }
    fn end(self) -> Result<(), WalkError> {
        Ok(())
    }
}

impl ser::SerializeTuple for &mut Walker {
    type Ok = ();
    type Error = WalkError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), WalkError> {
        value.serialize(&mut **self)
    }
    fn end(self) -> Result<(), WalkError> {
        Ok(())
    }
}

impl ser::SerializeTupleStruct for &mut Walker {
    type Ok = ();
    type Error = WalkError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), WalkError> {
        value.serialize(&mut **self)
    }
    fn end(self) -> Result<(), WalkError> {
        Ok(())
    }
}

impl ser::SerializeTupleVariant for &mut Walker {
    type Ok = ();
    type Error = WalkError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), WalkError> {
        value.serialize(&mut **self)
    }
    fn end(self) -> Result<(), WalkError> {
        Ok(())
    }
}

impl ser::SerializeMap for &mut Walker {
    type Ok = ();
    type Error = WalkError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), WalkError> {
        key.serialize(&mut **self)
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), WalkError> {
        value.serialize(&mut **self)
    }
    fn end(self) -> Result<(), WalkError> {
        Ok(())
    }
}

impl ser::SerializeStruct for &mut Walker {
    type Ok = ();
    type Error = WalkError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), WalkError> {
        self.field(key, value)
    }
    fn end(self) -> Result<(), WalkError> {
        self.structs.pop();
        Ok(())
    }
}

impl ser::SerializeStructVariant for &mut Walker {
    type Ok = ();
    type Error = WalkError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), WalkError> {
        self.field(key, value)
    }
    fn end(self) -> Result<(), WalkError> {
        self.structs.pop();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walk(sql: &str) -> Features {
        let parsed = pg_query::parse(sql).expect("parse");
        features(&parsed.protobuf)
    }

    #[test]
    fn finds_functions_everywhere() {
        let f = walk(
            "WITH c AS (SELECT a.f1(x) FROM t) SELECT * FROM c JOIN u ON g(u.a) = 1 \
             WHERE EXISTS (SELECT pg_catalog.nextval('s')) ORDER BY h() OVER (PARTITION BY k())",
        );
        let names: Vec<_> = f.functions.iter().map(|n| n.0.join(".")).collect();
        for want in ["a.f1", "g", "pg_catalog.nextval", "h", "k"] {
            assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
        }
    }

    #[test]
    fn finds_relations_and_setting_names() {
        let f = walk(
            "SELECT current_setting('a'), pg_catalog.current_setting('B', true), \
             current_setting(x), current_setting('a' || 'b'), current_setting(lower('c')) \
             FROM pg_catalog.pg_locks l JOIN \"Odd\" o ON true, (SELECT 1 FROM s) q",
        );
        assert_eq!(
            f.settings,
            vec![Some("a".into()), Some("B".into()), None, None, None]
        );
        let names: Vec<_> = f
            .relations
            .iter()
            .map(|r| format!("{}.{}", r.schema.as_deref().unwrap_or("-"), r.name))
            .collect();
        assert_eq!(names, ["pg_catalog.pg_locks", "-.Odd", "-.s"]);
        // The function inside the argument is still seen.
        assert!(f.functions.iter().any(|n| n.name() == "lower"));
    }

    #[test]
    fn finds_dml_locking_into_temp() {
        assert!(walk("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d").dml);
        assert!(walk("SELECT * FROM (SELECT * FROM t FOR SHARE) s").locking);
        assert!(walk("SELECT 1 INTO x").into);
        assert!(walk("CREATE TEMP TABLE x (a int)").temp);
        assert!(walk("SELECT * FROM pg_temp.x").temp);
        let plain = walk("SELECT a + b FROM t");
        assert_eq!(
            plain.relations,
            vec![RelName {
                schema: None,
                name: "t".into()
            }]
        );
        assert!(!plain.dml && !plain.locking && !plain.into && !plain.temp);
        assert_eq!(plain.operators, vec!["+".to_string()]);
    }
}
