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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use super::builtin;
use super::reason;
use super::stmt::{self, Body};
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
    /// May write or depends on the server it runs on: primary; with the
    /// reason (`super::reason`) when it is more than "it may write".
    Primary(Option<&'static str>),
    /// Takes a session-level advisory lock: primary, and pin the session.
    SessionLock,
    /// `set_config`: primary, and a session effect unless local.
    SetConfig,
    /// `current_setting`: read-only only when its argument is a constant
    /// naming a setting whose value follows the session.
    CurrentSetting,
}

/// An immutable view of the catalogue, swapped whole on refresh.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CatalogSnapshot {
    /// Worst volatility of any user function with this name, any schema.
    by_name: HashMap<String, Volatility>,
    /// Worst volatility per (schema, name).
    by_qualified: HashMap<(String, String), Volatility>,
    /// Operators outside `pg_catalog` implemented by a VOLATILE function.
    volatile_operators: HashSet<String>,
    /// Derived from the catalogue by a refresh; `None` before the first
    /// one (then the built-in lists, derived the same way from PostgreSQL
    /// 15, are used).
    derived: Option<Derived>,
}

/// Relations and settings derived from the catalogue.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Derived {
    /// Relations that must be read on the primary (server-local views,
    /// sequences, unlogged tables, views over them), with the reason
    /// (`None`: a view over a function that may write).
    relations: HashMap<(String, String), Option<&'static str>>,
    /// The same by name alone, any schema (for unqualified names).
    relations_by_name: HashMap<String, Option<&'static str>>,
    /// Lower-case names of settings of context `user` or `superuser`.
    session_settings: HashSet<String>,
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
                let unqualified = func.schema().is_none();
                if unqualified && self.by_name.get(name) == Some(&Volatility::Volatile) {
                    return Verdict::Primary(None);
                }
                if name == "current_setting" {
                    return Verdict::CurrentSetting;
                }
                if allow_list().contains(name) {
                    return Verdict::ReadOnly;
                }
                if server_local_function(name) {
                    // Before user functions: `pg_catalog` is searched first
                    // unless search_path says otherwise.
                    return Verdict::Primary(Some(reason::SERVER_LOCAL));
                }
                if unqualified && self.by_name.contains_key(name) {
                    // Known user function, not volatile (checked above).
                    return Verdict::ReadOnly;
                }
                Verdict::Primary(None)
            }
            Some(schema) => match self.by_qualified.get(&(schema.to_owned(), name.to_owned())) {
                Some(Volatility::Immutable | Volatility::Stable) => Verdict::ReadOnly,
                _ => Verdict::Primary(None),
            },
        }
    }

    /// An operator implemented by a volatile user function.
    pub fn volatile_operator(&self, op: &str) -> bool {
        self.volatile_operators.contains(op)
    }

    /// A relation named `[schema.]name` that must be read on the primary:
    /// `Some(reason)`. An unqualified name matches such a relation in any
    /// schema (search_path is not known here).
    pub fn relation(&self, schema: Option<&str>, name: &str) -> Option<Option<&'static str>> {
        match &self.derived {
            Some(d) => match schema {
                Some(s) => d.relations.get(&(s.to_owned(), name.to_owned())).copied(),
                None => d.relations_by_name.get(name).copied(),
            },
            None => match schema {
                Some(s) => builtin_views().get(&(s, name)).map(|r| Some(*r)),
                None => builtin_view_names().get(name).map(|r| Some(*r)),
            },
        }
    }

    /// `SHOW name` / `current_setting('name')` answers the same on a standby
    /// as on the primary: the setting's value follows the session (context
    /// `user` or `superuser`), it is not one of the transaction or
    /// recovery settings, or it is a custom `a.b` setting.
    pub fn session_setting(&self, name: &str) -> bool {
        let name = name.to_ascii_lowercase();
        if NOT_SESSION_SETTINGS.contains(&name.as_str()) {
            return false;
        }
        if name.contains('.') {
            return true;
        }
        match &self.derived {
            Some(d) => d.session_settings.contains(&name),
            None => builtin_settings().contains(name.as_str()),
        }
    }
}

/// Settings of context `user` that still differ between a primary and a
/// standby inside the same kind of transaction.
const NOT_SESSION_SETTINGS: &[&str] = &[
    "transaction_read_only",
    "transaction_isolation",
    "transaction_deferrable",
    "in_hot_standby",
];

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
        return Some(Verdict::Primary(deny_reason(name)));
    }
    None
}

/// Why a denied built-in needs the primary, beyond "it may write".
fn deny_reason(name: &str) -> Option<&'static str> {
    match name {
        "nextval" | "setval" | "currval" | "lastval" | "pg_sequence_last_value" => {
            Some(reason::SEQUENCE)
        }
        "txid_current"
        | "txid_current_if_assigned"
        | "pg_current_xact_id"
        | "pg_current_xact_id_if_assigned" => Some(reason::TRANSACTION_ID),
        "pg_notify" => Some(reason::LISTEN_NOTIFY),
        _ if name.starts_with("pg_advisory") || name.starts_with("pg_try_advisory") => {
            Some(reason::ADVISORY_LOCK)
        }
        "pg_backend_pid"
        | "inet_server_addr"
        | "inet_server_port"
        | "pg_current_wal_lsn"
        | "pg_current_wal_insert_lsn"
        | "pg_export_snapshot"
        | "pg_stat_clear_snapshot" => Some(reason::SERVER_LOCAL),
        _ if name.starts_with("pg_replication_") || name.starts_with("pg_logical_") => {
            Some(reason::SERVER_LOCAL)
        }
        _ => None,
    }
}

/// Built-ins (not on the allow list) whose answer is the state of the
/// server that runs them: recovery, WAL positions, statistics, activity,
/// locks, prepared transactions, files and sizes on disk, server settings
/// and identity. Only gives the reason: anything not allowed goes to the
/// primary anyway.
fn server_local_function(name: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "pg_stat_",
        "pg_last_",
        "pg_current_",
        "pg_control_",
        "pg_ls_",
        "pg_walfile",
        "pg_get_wal",
        "pg_replication_origin",
        "pg_show_",
        "pg_available_extension",
        "pg_timezone_",
    ];
    SERVER_LOCAL.contains(&name) || PREFIXES.iter().any(|p| name.starts_with(p))
}

/// See [`server_local_function`].
#[rustfmt::skip]
const SERVER_LOCAL: &[&str] = &[
    "version", "pg_postmaster_start_time", "pg_conf_load_time", "pg_is_in_recovery", "pg_is_wal_replay_paused",
    "inet_client_addr", "inet_client_port", "pg_backend_pid", "pg_database_size", "pg_indexes_size",
    "pg_relation_size", "pg_table_size", "pg_tablespace_size", "pg_total_relation_size",
    "pg_tablespace_location", "pg_tablespace_databases", "pg_blocking_pids", "pg_safe_snapshot_blocking_pids",
    "pg_jit_available", "pg_listening_channels", "pg_notification_queue_usage",
    "txid_current_snapshot", "pg_xact_commit_timestamp", "pg_xact_commit_timestamp_origin",
    "pg_last_committed_xact", "pg_xact_status", "txid_status", "pg_lock_status", "pg_prepared_xact",
    "pg_hba_file_rules", "pg_ident_file_mappings", "pg_config", "pg_cursor", "pg_prepared_statement",
    "pg_get_replication_slots", "pg_get_backend_memory_contexts", "pg_get_shmem_allocations",
    "pg_current_logfile", "pg_collation_actual_version", "pg_database_collation_actual_version",
    "pg_get_multixact_members", "pg_filenode_relation", "pg_get_publication_tables_state",
    "pg_stat_get_subscription", "pg_get_catalog_foreign_keys_state", "pg_nextoid", "txid_snapshot",
];

/// Built-ins that write, take locks, assign transaction ids, signal other
/// processes, execute SQL text, or answer differently on another server in a
/// way a program may rely on.
#[rustfmt::skip]
const DENY: &[&str] = &[
    "nextval", "setval", "currval", "lastval", "setseed", "pg_sequence_last_value",
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
    // session and catalogue information: answers that follow the session's
    // own settings and the replicated catalogue (server state is not here,
    // see SERVER_LOCAL)
    "current_database", "current_schema", "current_schemas", "current_query",
    "current_user", "session_user", "system_user", "user", "current_role", "pg_typeof", "format_type",
    "pg_get_viewdef", "pg_get_constraintdef", "pg_get_indexdef", "pg_get_expr", "pg_get_functiondef",
    "pg_get_function_arguments", "pg_get_function_result", "pg_get_function_identity_arguments",
    "pg_get_function_arg_default", "pg_get_function_sqlbody",
    "pg_get_serial_sequence", "pg_get_userbyid", "pg_get_triggerdef", "pg_get_ruledef", "pg_get_keywords",
    "pg_get_partkeydef", "pg_get_statisticsobjdef", "pg_get_statisticsobjdef_columns",
    "pg_get_statisticsobjdef_expressions", "pg_get_partition_constraintdef", "pg_table_is_visible",
    "pg_type_is_visible", "pg_function_is_visible", "pg_operator_is_visible", "pg_opclass_is_visible",
    "pg_opfamily_is_visible", "pg_collation_is_visible", "pg_conversion_is_visible",
    "pg_statistics_obj_is_visible", "pg_ts_config_is_visible", "pg_ts_dict_is_visible",
    "pg_ts_parser_is_visible", "pg_ts_template_is_visible", "pg_has_role", "has_table_privilege",
    "has_schema_privilege", "has_database_privilege", "has_column_privilege", "has_function_privilege",
    "has_sequence_privilege", "has_any_column_privilege", "has_language_privilege",
    "has_tablespace_privilege", "has_type_privilege", "has_parameter_privilege",
    "has_foreign_data_wrapper_privilege", "has_server_privilege", "to_regclass", "to_regtype",
    "to_regtypemod", "to_regproc", "to_regprocedure", "to_regnamespace", "to_regrole", "to_regoper",
    "to_regoperator", "to_regcollation", "obj_description", "col_description", "shobj_description",
    "pg_encoding_to_char", "pg_char_to_encoding", "pg_client_encoding", "pg_size_pretty", "pg_size_bytes",
    "pg_column_size", "pg_column_compression", "pg_relation_filenode", "pg_relation_filepath",
    "pg_wal_lsn_diff", "txid_snapshot_xmin", "txid_snapshot_xmax", "txid_snapshot_xip",
    "txid_visible_in_snapshot", "pg_snapshot_xmin", "pg_snapshot_xmax", "pg_snapshot_xip",
    "pg_visible_in_snapshot", "pg_options_to_table", "pg_index_column_has_property",
    "pg_indexam_has_property", "pg_index_has_property", "pg_describe_object", "pg_identify_object",
    "pg_identify_object_as_address", "pg_get_object_address", "row_security_active", "pg_trigger_depth",
    "pg_settings_get_flags", "pg_input_is_valid", "pg_input_error_info", "pg_get_catalog_foreign_keys",
    "pg_relation_is_updatable", "pg_column_is_updatable", "pg_relation_is_publishable",
    "pg_get_publication_tables", "pg_partition_root", "pg_partition_ancestors", "pg_partition_tree",
    "pg_sequence_parameters", "pg_get_replica_identity_index",
    "array_to_string", "pg_char_to_encoding", "getdatabaseencoding", "pg_encoding_max_length",
    "aclexplode", "acldefault", "aclitemin", "aclitemout", "makeaclitem", "aclcontains", "nameconcatoid",
    "pg_mcv_list_items", "pg_indexam_progress_phasename",
    // The session's own temporary schema: none on a standby, and a session
    // that creates one is pinned to the primary.
    "pg_my_temp_schema", "pg_is_other_temp_schema",
];

/// The built-ins allowed on a standby (for the audit against `pg_proc` in
/// `tests/classify_catalog.rs`).
pub fn allowed_builtins() -> &'static [&'static str] {
    ALLOW
}

fn allow_list() -> &'static HashSet<&'static str> {
    static SET: OnceLock<HashSet<&'static str>> = OnceLock::new();
    SET.get_or_init(|| ALLOW.iter().copied().collect())
}

/// The body of one LANGUAGE sql function, as `pg_proc` holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlBody {
    pub schema: String,
    pub name: String,
    /// `prosrc` (`atomic: false`); for a `BEGIN ATOMIC` or `RETURN` body,
    /// the `CREATE FUNCTION` statement `pg_get_functiondef` gives
    /// (`atomic: true`).
    pub text: String,
    pub atomic: bool,
}

/// A relation that must be read on the primary whatever reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelationKind {
    /// `relkind = 'S'`: a standby shows a value up to 32 ahead.
    Sequence,
    /// `relpersistence = 'u'`: unreadable during recovery.
    Unlogged,
}

/// One relation of [`RelationKind`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogRelation {
    pub schema: String,
    pub name: String,
    pub kind: RelationKind,
}

/// One view and its definition (`pg_get_viewdef`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewDefinition {
    pub schema: String,
    pub name: String,
    pub definition: String,
}

/// Everything a refresh reads from the catalogue; [`FunctionCatalog::install`]
/// derives the snapshot from it.
#[derive(Debug, Clone, Default)]
pub struct CatalogContent {
    /// Every function outside `pg_catalog`, with its declared volatility.
    pub functions: Vec<UserFunction>,
    /// Bodies of the LANGUAGE sql ones among them.
    pub sql_bodies: Vec<SqlBody>,
    pub volatile_operators: Vec<String>,
    pub relations: Vec<CatalogRelation>,
    pub views: Vec<ViewDefinition>,
    /// Names of the settings of context `user` or `superuser`.
    pub session_settings: Vec<String>,
}

/// Parsed texts by (text, atomic).
type ParsedTexts = HashMap<(String, bool), Arc<Option<Body>>>;

/// Volatility of user functions (everything outside `pg_catalog`), and the
/// relations and settings derived from the catalogue, filled from
/// `pg_proc`, `pg_class` (view definitions) and `pg_settings` by a refresh task.
/// Cheap to read: one `RwLock` read and an `Arc` clone per snapshot.
#[derive(Debug, Default)]
pub struct FunctionCatalog {
    snapshot: RwLock<Arc<CatalogSnapshot>>,
    /// Bumped whenever the snapshot's content changes.
    generation: AtomicU64,
    /// Parsed view definitions and SQL function bodies by text, kept from
    /// one refresh to the next (only the texts of the last one).
    parsed: Mutex<ParsedTexts>,
    /// View definitions by (`_RETURN` rule oid, row version).
    view_texts: Mutex<HashMap<(i64, String), String>>,
}

const FUNCTIONS_SQL: &str = "SELECT n.nspname::text, p.proname::text, p.provolatile::text, \
     CASE WHEN l.lanname = 'sql' AND p.prokind IN ('f', 'w') THEN \
       CASE WHEN p.prosqlbody IS NULL THEN p.prosrc ELSE pg_catalog.pg_get_functiondef(p.oid) END \
     END, p.prosqlbody IS NOT NULL \
     FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
     JOIN pg_catalog.pg_language l ON l.oid = p.prolang \
     WHERE n.nspname <> 'pg_catalog' ORDER BY 1, 2, p.oid";

const OPERATORS_SQL: &str = "SELECT DISTINCT o.oprname::text \
     FROM pg_catalog.pg_operator o JOIN pg_catalog.pg_proc p ON p.oid = o.oprcode \
     JOIN pg_catalog.pg_namespace n ON n.oid = o.oprnamespace \
     WHERE n.nspname <> 'pg_catalog' AND p.provolatile = 'v'";

/// Sequences and unlogged tables (temporary ones excluded: they pin the
/// session that made them, and other sessions cannot read them).
const RELATIONS_SQL: &str = "SELECT n.nspname::text, c.relname::text, c.relkind = 'S' \
     FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
     WHERE c.relpersistence <> 't' AND (c.relkind = 'S' \
       OR (c.relpersistence = 'u' AND c.relkind IN ('r', 'p', 'm', 'f'))) \
     ORDER BY 1, 2";

/// Every view, with its `_RETURN` rule's oid and row version: the
/// definition is re-read only when that changes. (`pg_depend` does not
/// record the dependencies of the system views on built-in functions: those
/// are pinned. The definition, parsed like any statement, has them all.)
const VIEW_RULES_SQL: &str = "SELECT n.nspname::text, c.relname::text, r.oid::int8, r.xmin::text \
     FROM pg_catalog.pg_rewrite r JOIN pg_catalog.pg_class c ON c.oid = r.ev_class \
     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
     WHERE c.relkind = 'v' AND c.relpersistence <> 't' AND r.rulename = '_RETURN' \
     ORDER BY 1, 2";

/// The definitions of the views whose rules are listed in `$1`.
const VIEW_DEFINITIONS_SQL: &str = "SELECT r.oid::int8, r.xmin::text, \
       pg_catalog.pg_get_viewdef(r.ev_class) \
     FROM pg_catalog.pg_rewrite r WHERE r.oid = ANY($1::int8[]::pg_catalog.oid[])";

const SETTINGS_SQL: &str = "SELECT name FROM pg_catalog.pg_settings \
     WHERE context IN ('user', 'superuser') ORDER BY 1";

impl FunctionCatalog {
    pub fn new() -> Self {
        Self::default()
    }

    /// Reload from the catalogue: user function volatility from `pg_proc`
    /// (SQL function bodies checked, see [`FunctionCatalog::install`]), the
    /// names of operators backed by volatile user functions, sequences,
    /// unlogged tables, view dependencies and session settings.
    pub async fn refresh(
        &self,
        client: &tokio_postgres::Client,
    ) -> Result<(), tokio_postgres::Error> {
        let mut content = CatalogContent::default();
        for row in client.query(FUNCTIONS_SQL, &[]).await? {
            let schema: String = row.try_get(0)?;
            let name: String = row.try_get(1)?;
            let code: String = row.try_get(2)?;
            if let Some(text) = row.try_get::<_, Option<String>>(3)? {
                content.sql_bodies.push(SqlBody {
                    schema: schema.clone(),
                    name: name.clone(),
                    text,
                    atomic: row.try_get(4)?,
                });
            }
            content.functions.push(UserFunction {
                schema,
                name,
                volatility: Volatility::from_code(&code),
            });
        }
        for row in client.query(OPERATORS_SQL, &[]).await? {
            content.volatile_operators.push(row.try_get(0)?);
        }
        for row in client.query(RELATIONS_SQL, &[]).await? {
            let sequence: bool = row.try_get(2)?;
            content.relations.push(CatalogRelation {
                schema: row.try_get(0)?,
                name: row.try_get(1)?,
                kind: if sequence {
                    RelationKind::Sequence
                } else {
                    RelationKind::Unlogged
                },
            });
        }
        let mut views = Vec::new();
        for row in client.query(VIEW_RULES_SQL, &[]).await? {
            let schema: String = row.try_get(0)?;
            let name: String = row.try_get(1)?;
            views.push((schema, name, (row.try_get::<_, i64>(2)?, row.try_get(3)?)));
        }
        let missing: Vec<i64> = {
            let texts = self.view_texts.lock().unwrap_or_else(|p| p.into_inner());
            views
                .iter()
                .filter(|(_, _, key)| !texts.contains_key(key))
                .map(|(_, _, key)| key.0)
                .collect()
        };
        let mut fetched = Vec::new();
        if !missing.is_empty() {
            for row in client.query(VIEW_DEFINITIONS_SQL, &[&missing]).await? {
                let key: (i64, String) = (row.try_get(0)?, row.try_get(1)?);
                fetched.push((
                    key,
                    row.try_get::<_, Option<String>>(2)?.unwrap_or_default(),
                ));
            }
        }
        {
            let mut texts = self.view_texts.lock().unwrap_or_else(|p| p.into_inner());
            texts.extend(fetched);
            let mut kept = HashMap::new();
            for (schema, name, key) in views {
                // A view redefined between the two queries: judged without
                // its text (not read-only) until the next refresh.
                let definition = texts.get(&key).cloned().unwrap_or_default();
                content.views.push(ViewDefinition {
                    schema,
                    name,
                    definition,
                });
                if let Some(t) = texts.remove(&key) {
                    kept.insert(key, t);
                }
            }
            *texts = kept;
        }
        for row in client.query(SETTINGS_SQL, &[]).await? {
            content.session_settings.push(row.try_get(0)?);
        }
        let changed = self.install(content);
        if changed {
            tracing::info!(generation = self.generation(), "function catalog changed");
        }
        Ok(())
    }

    /// Install a new content derived from `content`; returns true when it
    /// differs from the current one (the generation then moves on).
    ///
    /// - A STABLE or IMMUTABLE SQL function whose body is not read-only by
    ///   the classifier's own rules (it writes, calls a function that may,
    ///   reads a sequence or server-local state ...) is treated as VOLATILE;
    ///   transitively, to a fixpoint (a function is only ever downgraded,
    ///   so the iteration ends; a cycle of functions that read only stays
    ///   read-only).
    /// - A view (any schema) whose definition, judged like a SELECT, is not
    ///   read-only on a standby (it calls a function not allowed there,
    ///   reads a sequence, an unlogged table or another such view ...) must
    ///   be read on the primary; the reason is the first one found
    ///   ("server-local state" for a `pg_catalog` / `information_schema`
    ///   view without a more precise one).
    pub fn install(&self, content: CatalogContent) -> bool {
        let snap = {
            let mut parsed = self.parsed.lock().unwrap_or_else(|p| p.into_inner());
            let mut used = HashMap::new();
            let mut parse = |text: &str, atomic: bool| {
                let key = (text.to_owned(), atomic);
                let body = parsed
                    .get(&key)
                    .cloned()
                    .unwrap_or_else(|| Arc::new(stmt::parse_body(text, atomic)));
                used.insert(key, body.clone());
                body
            };
            let snap = derive(content, &mut parse);
            *parsed = used;
            snap
        };
        self.swap(snap)
    }

    /// Install new user function volatility and operators, keeping what was
    /// derived for relations and settings (used by tests).
    pub fn replace(
        &self,
        functions: impl IntoIterator<Item = UserFunction>,
        volatile_operators: impl IntoIterator<Item = String>,
    ) -> bool {
        let mut snap = CatalogSnapshot::build(functions, volatile_operators.into_iter().collect());
        snap.derived = self.snapshot().derived.clone();
        self.swap(snap)
    }

    fn swap(&self, snap: CatalogSnapshot) -> bool {
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

    /// The `pg_catalog` and `information_schema` views derived as
    /// server-local by the last refresh (sorted), `None` before one; see
    /// [`builtin_server_local_views`].
    pub fn server_local_system_views(&self) -> Option<Vec<(String, String)>> {
        let snap = self.snapshot();
        let d = snap.derived.as_ref()?;
        let mut out: Vec<_> = d
            .relations
            .keys()
            .filter(|(s, _)| s == "pg_catalog" || s == "information_schema")
            .cloned()
            .collect();
        out.sort();
        Some(out)
    }

    /// The session settings read by the last refresh (sorted, lower case),
    /// `None` before one; see [`builtin_session_settings`].
    pub fn session_settings(&self) -> Option<Vec<String>> {
        let snap = self.snapshot();
        let d = snap.derived.as_ref()?;
        let mut out: Vec<_> = d.session_settings.iter().cloned().collect();
        out.sort();
        Some(out)
    }

    /// How a user function is judged now (for tests and diagnostics).
    pub fn volatility(&self, schema: &str, name: &str) -> Option<Volatility> {
        self.snapshot()
            .by_qualified
            .get(&(schema.to_owned(), name.to_owned()))
            .copied()
    }
}

/// The server-local `pg_catalog` / `information_schema` views used before
/// the first refresh, as derived from PostgreSQL 15's catalogue (sorted).
pub fn builtin_server_local_views() -> Vec<(String, String)> {
    let mut out: Vec<_> = builtin::SERVER_LOCAL_VIEWS
        .iter()
        .map(|(s, n, _)| (s.to_string(), n.to_string()))
        .collect();
    out.sort();
    out
}

/// The session settings used before the first refresh, as PostgreSQL 15's
/// `pg_settings` lists them (sorted, lower case).
pub fn builtin_session_settings() -> Vec<String> {
    let mut out: Vec<_> = builtin::SESSION_SETTINGS
        .iter()
        .map(|s| s.to_string())
        .collect();
    out.sort();
    out
}

type Reasons<K> = HashMap<K, &'static str>;

fn builtin_views() -> &'static Reasons<(&'static str, &'static str)> {
    static MAP: OnceLock<Reasons<(&'static str, &'static str)>> = OnceLock::new();
    MAP.get_or_init(|| {
        builtin::SERVER_LOCAL_VIEWS
            .iter()
            .map(|(s, n, r)| ((*s, *n), *r))
            .collect()
    })
}

fn builtin_view_names() -> &'static Reasons<&'static str> {
    static MAP: OnceLock<Reasons<&'static str>> = OnceLock::new();
    MAP.get_or_init(|| {
        builtin::SERVER_LOCAL_VIEWS
            .iter()
            .map(|(_, n, r)| (*n, *r))
            .collect()
    })
}

fn builtin_settings() -> &'static HashSet<&'static str> {
    static SET: OnceLock<HashSet<&'static str>> = OnceLock::new();
    SET.get_or_init(|| builtin::SESSION_SETTINGS.iter().copied().collect())
}

/// See [`FunctionCatalog::install`].
fn derive(
    content: CatalogContent,
    parse: &mut dyn FnMut(&str, bool) -> Arc<Option<Body>>,
) -> CatalogSnapshot {
    let CatalogContent {
        mut functions,
        sql_bodies,
        volatile_operators,
        relations,
        views,
        session_settings,
    } = content;
    let operators: HashSet<String> = volatile_operators.into_iter().collect();
    let bodies: Vec<(String, String, Arc<Option<Body>>)> = sql_bodies
        .into_iter()
        .map(|b| {
            let body = parse(&b.text, b.atomic);
            (b.schema, b.name, body)
        })
        .collect();
    let views: Vec<(String, String, Arc<Option<Body>>)> = views
        .into_iter()
        .map(|v| {
            // No definition (the view changed under the refresh): not
            // read-only until the next one.
            let body = if v.definition.trim().is_empty() {
                Arc::new(None)
            } else {
                parse(&v.definition, false)
            };
            (v.schema, v.name, body)
        })
        .collect();
    let mut derived = Derived {
        session_settings: session_settings
            .iter()
            .map(|s| s.to_ascii_lowercase())
            .collect(),
        ..Default::default()
    };
    let mut qualified: BTreeMap<(String, String), Option<&'static str>> = BTreeMap::new();
    for r in relations {
        let why = match r.kind {
            RelationKind::Sequence => reason::SEQUENCE,
            RelationKind::Unlogged => reason::UNLOGGED,
        };
        qualified.insert((r.schema, r.name), Some(why));
    }
    // Functions settle against the relations known so far, views are
    // judged against the settled functions; again until no view is added
    // (both only ever grow, so this ends).
    let mut snap;
    loop {
        snap = settle(&mut functions, &bodies, &operators, &derived, &qualified);
        if !derive_views(&snap, &views, &mut qualified) {
            break;
        }
    }
    derived.relations_by_name = by_name(&qualified);
    derived.relations = qualified.into_iter().collect();
    snap.derived = Some(derived);
    snap
}

fn by_name(
    qualified: &BTreeMap<(String, String), Option<&'static str>>,
) -> HashMap<String, Option<&'static str>> {
    let mut out: HashMap<String, Option<&'static str>> = HashMap::new();
    for ((_, name), why) in qualified {
        let e = out.entry(name.clone()).or_insert(*why);
        if e.is_none() {
            *e = *why;
        }
    }
    out
}

/// Downgrade STABLE/IMMUTABLE SQL functions whose body is not read-only
/// until nothing changes; returns the snapshot of the settled functions.
fn settle(
    functions: &mut [UserFunction],
    bodies: &[(String, String, Arc<Option<Body>>)],
    operators: &HashSet<String>,
    derived: &Derived,
    relations: &BTreeMap<(String, String), Option<&'static str>>,
) -> CatalogSnapshot {
    let mut d = derived.clone();
    d.relations = relations.iter().map(|(k, v)| (k.clone(), *v)).collect();
    d.relations_by_name = by_name(relations);
    loop {
        let mut snap = CatalogSnapshot::build(functions.iter().cloned(), operators.clone());
        snap.derived = Some(d.clone());
        let mut downgraded = HashSet::new();
        for (schema, name, body) in bodies {
            let declared = snap.by_qualified.get(&(schema.clone(), name.clone()));
            if declared == Some(&Volatility::Volatile) {
                continue;
            }
            let read_only = body
                .as_ref()
                .as_ref()
                .is_some_and(|b| stmt::body_verdict(b, &snap).is_none());
            if !read_only {
                downgraded.insert((schema.as_str(), name.as_str()));
            }
        }
        if downgraded.is_empty() {
            return snap;
        }
        for f in functions.iter_mut() {
            if downgraded.contains(&(f.schema.as_str(), f.name.as_str())) {
                if f.volatility != Volatility::Volatile {
                    tracing::debug!(schema = %f.schema, name = %f.name, "SQL function body is not read-only: treated as VOLATILE");
                }
                f.volatility = Volatility::Volatile;
            }
        }
    }
}

/// One pass over the views not yet marked: mark those whose definition is
/// not read-only against `snap`. Returns whether any was marked.
fn derive_views(
    snap: &CatalogSnapshot,
    views: &[(String, String, Arc<Option<Body>>)],
    marked: &mut BTreeMap<(String, String), Option<&'static str>>,
) -> bool {
    let mut changed = false;
    for (schema, name, body) in views {
        let key = (schema.clone(), name.clone());
        if marked.contains_key(&key) {
            continue;
        }
        let why = match body.as_ref() {
            Some(b) => match stmt::body_verdict(b, snap) {
                None => continue,
                Some(why) => why,
            },
            None => None,
        };
        let system = schema == "pg_catalog" || schema == "information_schema";
        tracing::debug!(%schema, %name, ?why, "view is not read-only on a standby");
        marked.insert(key, why.or(system.then_some(reason::SERVER_LOCAL)));
        changed = true;
    }
    changed
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
                user("public", "version", Volatility::Stable),
                user("public", "pg_stat_get_activity", Volatility::Immutable),
            ],
            Vec::new(),
        );
        let s = cat.snapshot();
        assert_eq!(
            s.judge(&f(&["lower"])),
            Verdict::Primary(None),
            "volatile user shadow"
        );
        assert_eq!(s.judge(&f(&["pg_catalog", "lower"])), Verdict::ReadOnly);
        assert_eq!(
            s.judge(&f(&["nextval"])),
            Verdict::Primary(Some(reason::SEQUENCE)),
            "deny list wins"
        );
        assert_eq!(s.judge(&f(&["stable_f"])), Verdict::ReadOnly);
        assert_eq!(s.judge(&f(&["vol_f"])), Verdict::Primary(None));
        assert_eq!(s.judge(&f(&["app", "vol_f"])), Verdict::ReadOnly);
        assert_eq!(s.judge(&f(&["public", "vol_f"])), Verdict::Primary(None));
        assert_eq!(s.judge(&f(&["unknown_f"])), Verdict::Primary(None));
        assert_eq!(s.judge(&f(&["pg_try_advisory_lock"])), Verdict::SessionLock);
        assert_eq!(
            s.judge(&f(&["pg_advisory_xact_lock"])),
            Verdict::Primary(Some(reason::ADVISORY_LOCK))
        );
        assert_eq!(s.judge(&f(&["lo_import"])), Verdict::Primary(None));
        for server_local in [
            "pg_is_in_recovery",
            "pg_last_wal_replay_lsn",
            "pg_stat_get_activity",
            "pg_relation_size",
            "version",
            "pg_postmaster_start_time",
            "inet_client_addr",
            "txid_current_snapshot",
        ] {
            assert_eq!(
                s.judge(&f(&[server_local])),
                Verdict::Primary(Some(reason::SERVER_LOCAL)),
                "{server_local}"
            );
        }
        assert_eq!(s.judge(&f(&["current_setting"])), Verdict::CurrentSetting);
        // A user function of a server-local built-in's name does not make
        // the unqualified call (pg_catalog's, as a rule) read-only ...
        assert_eq!(
            s.judge(&f(&["pg_stat_get_activity"])),
            Verdict::Primary(Some(reason::SERVER_LOCAL))
        );
        // ... the qualified one is the user's.
        assert_eq!(s.judge(&f(&["public", "version"])), Verdict::ReadOnly);
        assert_eq!(s.judge(&f(&["pg_size_pretty"])), Verdict::ReadOnly);
    }

    /// No built-in is both allowed and server-local, denied or special.
    #[test]
    fn lists_do_not_overlap() {
        for name in ALLOW {
            assert!(
                !server_local_function(name),
                "{name} allowed and server-local"
            );
            assert!(
                builtin_special(name).is_none(),
                "{name} allowed and special"
            );
        }
    }

    fn body(schema: &str, name: &str, text: &str, atomic: bool) -> SqlBody {
        SqlBody {
            schema: schema.into(),
            name: name.into(),
            text: text.into(),
            atomic,
        }
    }

    /// STABLE/IMMUTABLE SQL functions whose body is not read-only become
    /// VOLATILE, transitively; a read-only cycle stays read-only.
    #[test]
    fn lying_sql_functions_settle_to_volatile() {
        let cat = FunctionCatalog::new();
        let s = Volatility::Stable;
        let fns = [
            ("lies", "SELECT nextval('s')::int", false),
            ("calls_lies", "SELECT lies() + 1", false),
            ("calls_calls", "SELECT 1 FROM t WHERE calls_lies() > 0", false),
            ("honest", "SELECT a FROM t WHERE id = $1", false),
            ("inserts", "INSERT INTO t VALUES (1) RETURNING 1", false),
            ("cycle_a", "SELECT cycle_b()", false),
            ("cycle_b", "SELECT cycle_a()", false),
            ("bad_cycle_a", "SELECT bad_cycle_b()", false),
            ("bad_cycle_b", "SELECT bad_cycle_a() + nextval('s')", false),
            ("atomic_ret", "CREATE FUNCTION public.atomic_ret() RETURNS integer LANGUAGE sql STABLE RETURN (nextval('s'::regclass))::integer", true),
            ("atomic_ok", "CREATE FUNCTION public.atomic_ok() RETURNS integer LANGUAGE sql STABLE BEGIN ATOMIC SELECT 1; END", true),
            ("atomic_dml", "CREATE FUNCTION public.atomic_dml() RETURNS integer LANGUAGE sql STABLE BEGIN ATOMIC INSERT INTO t VALUES (1); SELECT 1; END", true),
            ("reads_seq", "SELECT last_value FROM s", false),
            ("reads_view", "SELECT count(*) FROM act", false),
            ("bad_syntax", "SELEC 1", false),
        ];
        let content = CatalogContent {
            functions: fns.iter().map(|(n, _, _)| user("public", n, s)).collect(),
            sql_bodies: fns
                .iter()
                .map(|(n, b, a)| body("public", n, b, *a))
                .collect(),
            relations: vec![CatalogRelation {
                schema: "public".into(),
                name: "s".into(),
                kind: RelationKind::Sequence,
            }],
            views: vec![ViewDefinition {
                schema: "public".into(),
                name: "act".into(),
                definition: " SELECT pid FROM pg_stat_get_activity(NULL::integer);".into(),
            }],
            ..Default::default()
        };
        assert!(cat.install(content));
        for (name, want) in [
            ("lies", Volatility::Volatile),
            ("calls_lies", Volatility::Volatile),
            ("calls_calls", Volatility::Volatile),
            ("honest", Volatility::Stable),
            ("inserts", Volatility::Volatile),
            ("cycle_a", Volatility::Stable),
            ("cycle_b", Volatility::Stable),
            ("bad_cycle_a", Volatility::Volatile),
            ("bad_cycle_b", Volatility::Volatile),
            ("atomic_ret", Volatility::Volatile),
            ("atomic_ok", Volatility::Stable),
            ("atomic_dml", Volatility::Volatile),
            ("reads_seq", Volatility::Volatile),
            ("reads_view", Volatility::Volatile),
            ("bad_syntax", Volatility::Volatile),
        ] {
            assert_eq!(cat.volatility("public", name), Some(want), "{name}");
        }
    }

    /// Views over server-local functions, over such views, over sequences
    /// and unlogged tables are derived; others are not.
    #[test]
    fn views_are_derived_transitively() {
        let cat = FunctionCatalog::new();
        let view = |n: &str, d: &str| ViewDefinition {
            schema: "app".into(),
            name: n.into(),
            definition: d.into(),
        };
        let content = CatalogContent {
            relations: vec![CatalogRelation {
                schema: "app".into(),
                name: "ul".into(),
                kind: RelationKind::Unlogged,
            }],
            views: vec![
                view("over_over", " SELECT x FROM app.over_act;"),
                view("over_act", " SELECT pid FROM act WHERE true;"),
                view(
                    "act",
                    " SELECT a.pid FROM pg_stat_get_activity(NULL::integer) a(pid);",
                ),
                view("plain", " SELECT lower(t.v) AS lower FROM app.t;"),
                view("over_ul", " SELECT a FROM app.ul;"),
                view("setting", " SELECT current_setting('port') AS p;"),
                view("session", " SELECT current_setting('search_path') AS p;"),
                view("unknown", ""),
            ],
            session_settings: vec!["search_path".into()],
            ..Default::default()
        };
        cat.install(content);
        let snap = cat.snapshot();
        assert_eq!(
            snap.relation(Some("app"), "act"),
            Some(Some(reason::SERVER_LOCAL))
        );
        assert_eq!(
            snap.relation(None, "over_over"),
            Some(Some(reason::SERVER_LOCAL))
        );
        assert_eq!(
            snap.relation(Some("app"), "over_ul"),
            Some(Some(reason::UNLOGGED))
        );
        assert_eq!(snap.relation(None, "ul"), Some(Some(reason::UNLOGGED)));
        assert_eq!(snap.relation(Some("app"), "plain"), None);
        assert_eq!(
            snap.relation(Some("app"), "setting"),
            Some(Some(reason::SERVER_LOCAL))
        );
        assert_eq!(snap.relation(Some("app"), "session"), None);
        assert_eq!(snap.relation(Some("app"), "unknown"), Some(None));
        assert_eq!(snap.relation(Some("other"), "act"), None);
        // Derived: the built-in list is no longer used.
        assert_eq!(snap.relation(None, "pg_locks"), None);
        assert_eq!(
            FunctionCatalog::new().snapshot().relation(None, "pg_locks"),
            Some(Some(reason::SERVER_LOCAL))
        );
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
