//! Which functions may run on a standby: a fixed allow list of built-ins that
//! cannot write or change session state, a deny list that wins over the user
//! catalogue, and [`FunctionCatalog`], the volatility of user functions read
//! from `pg_proc`.
//!
//! Hazards:
//! - Functions are judged by name, not by signature: if any overload of a
//!   name is VOLATILE the name is treated as volatile.
//! - An unqualified name may resolve to a user function through `search_path`;
//!   a user function of the same name that is VOLATILE therefore wins over the
//!   allow list. Names on the deny list stay denied whatever the catalogue
//!   says (`pg_catalog` is searched first unless the path says otherwise).
//! - Declared volatility can lie (a STABLE function calling `nextval`); the
//!   proxy's 25006 retry and [`super::Classifier::learn_writes`] cover that.
//! - `pg_proc` is per database: one catalogue describes the database it was
//!   refreshed from.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use super::walk::FuncName;

/// `pg_proc.provolatile`, ordered from safest to least safe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Volatility {
    Immutable,
    Stable,
    Volatile,
}

impl Volatility {
    /// From the `provolatile` letter; unknown letters are volatile.
    pub fn from_code(code: &str) -> Self {
        match code {
            "i" => Volatility::Immutable,
            "s" => Volatility::Stable,
            _ => Volatility::Volatile,
        }
    }
}

/// One user function as listed in `pg_proc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserFunction {
    pub schema: String,
    pub name: String,
    pub volatility: Volatility,
}

/// What a function call means for routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    ReadOnly,
    /// May write or depends on the server it runs on: primary.
    Primary,
    /// Takes a session-level advisory lock: primary, and pin the session.
    SessionLock,
    /// `set_config`: primary, and a session effect unless local.
    SetConfig,
}

/// An immutable view of the catalogue, swapped whole on refresh.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CatalogSnapshot {
    /// Worst volatility of any user function with this name, any schema.
    by_name: HashMap<String, Volatility>,
    /// Worst volatility per (schema, name).
    by_qualified: HashMap<(String, String), Volatility>,
    /// Operators outside `pg_catalog` implemented by a VOLATILE function.
    volatile_operators: HashSet<String>,
}

impl CatalogSnapshot {
    fn build(
        functions: impl IntoIterator<Item = UserFunction>,
        volatile_operators: HashSet<String>,
    ) -> Self {
        let mut snap = CatalogSnapshot {
            volatile_operators,
            ..Default::default()
        };
        for f in functions {
            let v = f.volatility;
            let e = snap.by_name.entry(f.name.clone()).or_insert(v);
            *e = (*e).max(v);
            let e = snap.by_qualified.entry((f.schema, f.name)).or_insert(v);
            *e = (*e).max(v);
        }
        snap
    }

    /// Judge one function call.
    pub fn judge(&self, func: &FuncName) -> Verdict {
        let name = func.name();
        match func.schema() {
            None | Some("pg_catalog") => {
                if let Some(v) = builtin_special(name) {
                    return v;
                }
                if func.schema().is_none() && self.by_name.get(name) == Some(&Volatility::Volatile)
                {
                    return Verdict::Primary;
                }
                if allow_list().contains(name) {
                    return Verdict::ReadOnly;
                }
                if func.schema().is_none() && self.by_name.contains_key(name) {
                    // Known user function, not volatile (checked above).
                    return Verdict::ReadOnly;
                }
                Verdict::Primary
            }
            Some(schema) => match self.by_qualified.get(&(schema.to_owned(), name.to_owned())) {
                Some(Volatility::Immutable | Volatility::Stable) => Verdict::ReadOnly,
                _ => Verdict::Primary,
            },
        }
    }

    /// An operator implemented by a volatile user function.
    pub fn volatile_operator(&self, op: &str) -> bool {
        self.volatile_operators.contains(op)
    }
}

/// Built-ins with a fixed verdict whatever the catalogue says.
fn builtin_special(name: &str) -> Option<Verdict> {
    const SESSION_LOCKS: &[&str] = &[
        "pg_advisory_lock",
        "pg_advisory_lock_shared",
        "pg_try_advisory_lock",
        "pg_try_advisory_lock_shared",
    ];
    const DENY_PREFIXES: &[&str] = &[
        "pg_advisory",
        "pg_try_advisory",
        "lo_",
        "dblink",
        "pg_logical_",
        "pg_replication_",
    ];
    if SESSION_LOCKS.contains(&name) {
        return Some(Verdict::SessionLock);
    }
    if name == "set_config" {
        return Some(Verdict::SetConfig);
    }
    if DENY.contains(&name) || DENY_PREFIXES.iter().any(|p| name.starts_with(p)) {
        return Some(Verdict::Primary);
    }
    None
}

/// Built-ins that write, take locks, assign transaction ids, signal other
/// processes, execute SQL text, or answer differently on another server in a
/// way a program may rely on.
#[rustfmt::skip]
const DENY: &[&str] = &[
    "nextval", "setval", "currval", "lastval", "setseed",
    "txid_current", "txid_current_if_assigned", "pg_current_xact_id", "pg_current_xact_id_if_assigned",
    "pg_notify", "loread", "lowrite",
    "pg_cancel_backend", "pg_terminate_backend", "pg_reload_conf", "pg_rotate_logfile", "pg_switch_wal",
    "pg_create_restore_point", "pg_backup_start", "pg_backup_stop", "pg_start_backup", "pg_stop_backup",
    "pg_promote", "pg_wal_replay_pause", "pg_wal_replay_resume", "pg_log_backend_memory_contexts",
    "pg_create_physical_replication_slot", "pg_create_logical_replication_slot", "pg_drop_replication_slot",
    "pg_copy_physical_replication_slot", "pg_copy_logical_replication_slot", "pg_export_snapshot",
    "pg_stat_reset", "pg_stat_reset_shared", "pg_stat_reset_single_table_counters",
    "pg_stat_reset_single_function_counters", "pg_stat_reset_slru", "pg_stat_reset_replication_slot",
    "pg_stat_clear_snapshot", "pg_read_file", "pg_read_binary_file", "pg_ls_dir", "pg_file_write",
    "query_to_xml", "query_to_xmlschema", "query_to_xml_and_xmlschema", "cursor_to_xml", "cursor_to_xmlschema",
    "table_to_xml", "table_to_xmlschema", "table_to_xml_and_xmlschema", "schema_to_xml", "database_to_xml",
    "pg_backend_pid", "inet_server_addr", "inet_server_port", "pg_current_wal_lsn", "pg_current_wal_insert_lsn",
    "pg_import_system_collations", "binary_upgrade_set_next_pg_type_oid", "brin_summarize_new_values",
    "brin_summarize_range", "brin_desummarize_range", "gin_clean_pending_list", "amcheck",
];

/// Built-ins known not to write or change session state.
#[rustfmt::skip]
const ALLOW: &[&str] = &[
    // math
    "abs", "cbrt", "ceil", "ceiling", "degrees", "div", "exp", "factorial", "floor", "gcd", "lcm", "ln", "log",
    "log10", "min_scale", "mod", "pi", "power", "pow", "radians", "round", "scale", "sign", "sqrt", "trim_scale",
    "trunc", "width_bucket", "random", "random_normal", "acos", "acosd", "asin", "asind", "atan", "atand", "atan2",
    "atan2d", "cos", "cosd", "cot", "cotd", "sin", "sind", "tan", "tand", "sinh", "cosh", "tanh", "asinh", "acosh",
    "atanh", "erf", "erfc", "numeric", "int2", "int4", "int8", "float4", "float8", "bool", "text", "varchar", "bpchar",
    "name", "oid", "money", "bytea", "char", "interval", "date", "time", "timetz", "timestamp", "timestamptz",
    // strings
    "ascii", "bit_length", "btrim", "char_length", "character_length", "chr", "concat", "concat_ws", "convert",
    "convert_from", "convert_to", "decode", "encode", "format", "initcap", "left", "length", "lower", "lpad",
    "ltrim", "md5", "normalize", "is_normalized", "octet_length", "overlay", "parse_ident", "position",
    "quote_ident", "quote_literal", "quote_nullable", "regexp_count", "regexp_instr", "regexp_like", "regexp_match",
    "regexp_matches", "regexp_replace", "regexp_split_to_array", "regexp_split_to_table", "regexp_substr", "repeat",
    "replace", "reverse", "right", "rpad", "rtrim", "split_part", "starts_with", "string_to_array",
    "string_to_table", "strpos", "substr", "substring", "to_ascii", "to_hex", "to_bin", "to_oct", "translate",
    "unistr", "upper", "casefold", "sha224", "sha256", "sha384", "sha512", "crc32", "crc32c", "like_escape",
    "similar_escape", "similar_to_escape", "get_bit", "get_byte", "set_bit", "set_byte", "bit_count",
    "pg_collation_for", "string_agg", "textcat", "texteq", "textlen", "quote_ident",
    // date and time
    "age", "clock_timestamp", "date_add", "date_bin", "date_part", "date_subtract", "date_trunc", "extract",
    "isfinite", "justify_days", "justify_hours", "justify_interval", "make_date", "make_interval", "make_time",
    "make_timestamp", "make_timestamptz", "now", "statement_timestamp", "timeofday", "transaction_timestamp",
    "to_char", "to_date", "to_number", "to_timestamp", "timezone", "overlaps", "pg_sleep", "pg_sleep_for",
    "pg_sleep_until",
    // json
    "to_json", "to_jsonb", "array_to_json", "row_to_json", "json_build_array", "jsonb_build_array",
    "json_build_object", "jsonb_build_object", "json_object", "jsonb_object", "json_array_length",
    "jsonb_array_length", "json_each", "jsonb_each", "json_each_text", "jsonb_each_text", "json_extract_path",
    "jsonb_extract_path", "json_extract_path_text", "jsonb_extract_path_text", "json_object_keys",
    "jsonb_object_keys", "json_populate_record", "jsonb_populate_record", "json_populate_recordset",
    "jsonb_populate_recordset", "json_to_record", "jsonb_to_record", "json_to_recordset", "jsonb_to_recordset",
    "json_array_elements", "jsonb_array_elements", "json_array_elements_text", "jsonb_array_elements_text",
    "json_typeof", "jsonb_typeof", "json_strip_nulls", "jsonb_strip_nulls", "jsonb_set", "jsonb_set_lax",
    "jsonb_insert", "jsonb_pretty", "jsonb_path_exists", "jsonb_path_match", "jsonb_path_query",
    "jsonb_path_query_array", "jsonb_path_query_first", "jsonb_path_exists_tz", "jsonb_path_match_tz",
    "jsonb_path_query_tz", "jsonb_path_query_array_tz", "jsonb_path_query_first_tz", "json_agg", "jsonb_agg",
    "json_agg_strict", "jsonb_agg_strict", "json_object_agg", "jsonb_object_agg", "json_object_agg_strict",
    "jsonb_object_agg_strict", "json_object_agg_unique", "jsonb_object_agg_unique", "json_object_agg_unique_strict",
    "jsonb_object_agg_unique_strict", "json_scalar", "json_serialize",
    // text search
    "to_tsvector", "to_tsquery", "plainto_tsquery", "phraseto_tsquery", "websearch_to_tsquery", "ts_rank",
    "ts_rank_cd", "ts_headline", "setweight", "strip", "numnode", "querytree", "tsvector_to_array",
    "array_to_tsvector", "ts_lexize", "ts_parse", "ts_token_type", "get_current_ts_config",
    // arrays and set-returning functions
    "array_append", "array_cat", "array_dims", "array_fill", "array_length", "array_lower", "array_ndims",
    "array_position", "array_positions", "array_prepend", "array_remove", "array_replace", "array_to_string",
    "array_upper", "cardinality", "trim_array", "array_sample", "array_shuffle", "array_reverse", "array_sort",
    "unnest", "generate_series", "generate_subscripts",
    // aggregates and window functions
    "avg", "bit_and", "bit_or", "bit_xor", "bool_and", "bool_or", "count", "every", "max", "min", "sum",
    "array_agg", "corr", "covar_pop", "covar_samp", "regr_avgx", "regr_avgy", "regr_count", "regr_intercept",
    "regr_r2", "regr_slope", "regr_sxx", "regr_sxy", "regr_syy", "stddev", "stddev_pop", "stddev_samp", "variance",
    "var_pop", "var_samp", "mode", "percentile_cont", "percentile_disc", "rank", "dense_rank", "percent_rank",
    "cume_dist", "row_number", "ntile", "lag", "lead", "first_value", "last_value", "nth_value", "any_value",
    "range_agg", "range_intersect_agg", "xmlagg", "grouping",
    // conditionals, ranges, enums, network, uuid, geometry
    "num_nulls", "num_nonnulls", "nullif", "coalesce", "greatest", "least", "lower_inc", "upper_inc", "lower_inf",
    "upper_inf", "isempty", "range_merge", "int4range", "int8range", "numrange", "tsrange", "tstzrange", "daterange",
    "int4multirange", "int8multirange", "nummultirange", "tsmultirange", "tstzmultirange", "datemultirange",
    "multirange", "enum_first", "enum_last", "enum_range", "abbrev", "broadcast", "family", "host", "hostmask",
    "inet_merge", "inet_same_family", "masklen", "netmask", "network", "set_masklen", "macaddr8_set7bit",
    "gen_random_uuid", "uuidv4", "uuidv7", "uuid_extract_timestamp", "uuid_extract_version", "area", "center",
    "diameter", "height", "isclosed", "isopen", "npoints", "pclose", "popen", "radius", "width", "box", "circle",
    "line", "lseg", "path", "point", "polygon", "bound_box",
    // xml (reading only)
    "xmlcomment", "xmltext", "xpath", "xpath_exists", "xmlexists", "xml_is_well_formed",
    "xml_is_well_formed_document", "xml_is_well_formed_content",
    // session and system information
    "current_database", "current_schema", "current_schemas", "current_setting", "current_query",
    "current_user", "session_user", "system_user", "user", "current_role", "inet_client_addr", "inet_client_port",
    "pg_conf_load_time", "pg_is_in_recovery", "pg_postmaster_start_time", "version", "pg_typeof", "format_type",
    "pg_get_viewdef", "pg_get_constraintdef", "pg_get_indexdef", "pg_get_expr", "pg_get_functiondef",
    "pg_get_function_arguments", "pg_get_function_result", "pg_get_function_identity_arguments",
    "pg_get_serial_sequence", "pg_get_userbyid", "pg_get_triggerdef", "pg_get_ruledef", "pg_get_keywords",
    "pg_get_partkeydef", "pg_get_statisticsobjdef", "pg_get_partition_constraintdef", "pg_table_is_visible",
    "pg_type_is_visible", "pg_function_is_visible", "pg_has_role", "has_table_privilege", "has_schema_privilege",
    "has_database_privilege", "has_column_privilege", "has_function_privilege", "has_sequence_privilege",
    "has_any_column_privilege", "has_language_privilege", "has_tablespace_privilege", "has_type_privilege",
    "has_parameter_privilege", "to_regclass", "to_regtype", "to_regtypemod", "to_regproc", "to_regprocedure",
    "to_regnamespace", "to_regrole", "to_regoper", "to_regoperator", "to_regcollation", "obj_description",
    "col_description", "shobj_description", "pg_encoding_to_char", "pg_char_to_encoding", "pg_client_encoding",
    "pg_relation_size", "pg_total_relation_size", "pg_table_size", "pg_indexes_size", "pg_database_size",
    "pg_tablespace_size", "pg_size_pretty", "pg_size_bytes", "pg_column_size", "pg_column_compression",
    "pg_relation_filenode", "pg_relation_filepath", "pg_tablespace_location", "pg_my_temp_schema",
    "pg_is_other_temp_schema", "pg_last_xact_replay_timestamp", "pg_last_wal_replay_lsn",
    "pg_last_wal_receive_lsn", "pg_is_wal_replay_paused", "pg_get_wal_replay_pause_state", "pg_wal_lsn_diff",
    "txid_current_snapshot", "txid_snapshot_xmin", "txid_snapshot_xmax", "txid_snapshot_xip",
    "txid_visible_in_snapshot", "pg_current_snapshot", "pg_snapshot_xmin", "pg_snapshot_xmax", "pg_snapshot_xip",
    "pg_visible_in_snapshot", "pg_xact_commit_timestamp", "pg_jit_available", "pg_listening_channels",
    "pg_notification_queue_usage", "pg_options_to_table", "pg_index_column_has_property",
    "pg_indexam_has_property", "pg_index_has_property", "pg_describe_object", "pg_identify_object",
    "pg_identify_object_as_address", "pg_get_object_address", "row_security_active", "pg_trigger_depth",
    "pg_blocking_pids", "pg_safe_snapshot_blocking_pids", "pg_get_keywords", "pg_settings_get_flags",
    "pg_input_is_valid", "pg_input_error_info", "pg_get_catalog_foreign_keys",
];

fn allow_list() -> &'static HashSet<&'static str> {
    static SET: OnceLock<HashSet<&'static str>> = OnceLock::new();
    SET.get_or_init(|| ALLOW.iter().copied().collect())
}

/// Volatility of user functions (everything outside `pg_catalog`), filled
/// from `pg_proc` by a refresh task. Cheap to read: one `RwLock` read and an
/// `Arc` clone per snapshot.
#[derive(Debug, Default)]
pub struct FunctionCatalog {
    snapshot: RwLock<Arc<CatalogSnapshot>>,
    /// Bumped whenever the snapshot's content changes.
    generation: AtomicU64,
}

const FUNCTIONS_SQL: &str = "SELECT n.nspname::text, p.proname::text, p.provolatile::text \
     FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
     WHERE n.nspname <> 'pg_catalog'";

const OPERATORS_SQL: &str = "SELECT DISTINCT o.oprname::text \
     FROM pg_catalog.pg_operator o JOIN pg_catalog.pg_proc p ON p.oid = o.oprcode \
     JOIN pg_catalog.pg_namespace n ON n.oid = o.oprnamespace \
     WHERE n.nspname <> 'pg_catalog' AND p.provolatile = 'v'";

impl FunctionCatalog {
    pub fn new() -> Self {
        Self::default()
    }

    /// Reload user function volatility from `pg_proc` (and the names of
    /// operators backed by volatile user functions from `pg_operator`).
    pub async fn refresh(
        &self,
        client: &tokio_postgres::Client,
    ) -> Result<(), tokio_postgres::Error> {
        let mut functions = Vec::new();
        for row in client.query(FUNCTIONS_SQL, &[]).await? {
            let code: String = row.try_get(2)?;
            functions.push(UserFunction {
                schema: row.try_get(0)?,
                name: row.try_get(1)?,
                volatility: Volatility::from_code(&code),
            });
        }
        let mut operators = Vec::new();
        for row in client.query(OPERATORS_SQL, &[]).await? {
            operators.push(row.try_get::<_, String>(0)?);
        }
        let changed = self.replace(functions, operators);
        if changed {
            tracing::info!(generation = self.generation(), "function catalog changed");
        }
        Ok(())
    }

    /// Install a new content (used by `refresh`, and by tests). Returns true
    /// when it differs from the current one (the generation then moves on and
    /// cached analyses computed from the old content are no longer used).
    pub fn replace(
        &self,
        functions: impl IntoIterator<Item = UserFunction>,
        volatile_operators: impl IntoIterator<Item = String>,
    ) -> bool {
        let snap = CatalogSnapshot::build(functions, volatile_operators.into_iter().collect());
        let mut guard = self
            .snapshot
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if **guard == snap {
            return false;
        }
        *guard = Arc::new(snap);
        self.generation.fetch_add(1, Ordering::Release);
        true
    }

    /// The current content.
    pub(crate) fn snapshot(&self) -> Arc<CatalogSnapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Changes whenever the content changes.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(parts: &[&str]) -> FuncName {
        FuncName(parts.iter().map(|s| s.to_string()).collect())
    }

    fn user(schema: &str, name: &str, volatility: Volatility) -> UserFunction {
        UserFunction {
            schema: schema.into(),
            name: name.into(),
            volatility,
        }
    }

    #[test]
    fn verdicts() {
        let cat = FunctionCatalog::new();
        cat.replace(
            [
                user("public", "stable_f", Volatility::Stable),
                user("public", "vol_f", Volatility::Volatile),
                user("app", "vol_f", Volatility::Immutable),
                user("public", "lower", Volatility::Volatile),
                user("public", "nextval", Volatility::Immutable),
            ],
            Vec::new(),
        );
        let s = cat.snapshot();
        assert_eq!(
            s.judge(&f(&["lower"])),
            Verdict::Primary,
            "volatile user shadow"
        );
        assert_eq!(s.judge(&f(&["pg_catalog", "lower"])), Verdict::ReadOnly);
        assert_eq!(
            s.judge(&f(&["nextval"])),
            Verdict::Primary,
            "deny list wins"
        );
        assert_eq!(s.judge(&f(&["stable_f"])), Verdict::ReadOnly);
        assert_eq!(s.judge(&f(&["vol_f"])), Verdict::Primary);
        assert_eq!(s.judge(&f(&["app", "vol_f"])), Verdict::ReadOnly);
        assert_eq!(s.judge(&f(&["public", "vol_f"])), Verdict::Primary);
        assert_eq!(s.judge(&f(&["unknown_f"])), Verdict::Primary);
        assert_eq!(s.judge(&f(&["pg_try_advisory_lock"])), Verdict::SessionLock);
        assert_eq!(s.judge(&f(&["pg_advisory_xact_lock"])), Verdict::Primary);
        assert_eq!(s.judge(&f(&["lo_import"])), Verdict::Primary);
    }

    #[test]
    fn generation_moves_only_on_change() {
        let cat = FunctionCatalog::new();
        let g0 = cat.generation();
        assert!(cat.replace([user("public", "a", Volatility::Stable)], Vec::new()));
        assert!(!cat.replace([user("public", "a", Volatility::Stable)], Vec::new()));
        assert_eq!(cat.generation(), g0 + 1);
    }
}
