//! Protocol constants: capability flags, server status flags, command bytes, error numbers.

/// Capability flags (`CLIENT_*`).
pub mod cap {
    /// New, longer password hashes.
    pub const LONG_PASSWORD: u32 = 1;
    /// Affected rows = found rows.
    pub const FOUND_ROWS: u32 = 1 << 1;
    /// All column flags.
    pub const LONG_FLAG: u32 = 1 << 2;
    /// A database may be given at connect.
    pub const CONNECT_WITH_DB: u32 = 1 << 3;
    /// Compression (never offered by dgf).
    pub const COMPRESS: u32 = 1 << 5;
    /// LOAD DATA LOCAL (never offered by dgf).
    pub const LOCAL_FILES: u32 = 1 << 7;
    /// Spaces before '(' are ignored.
    pub const IGNORE_SPACE: u32 = 1 << 8;
    /// Protocol 4.1.
    pub const PROTOCOL_41: u32 = 1 << 9;
    /// Interactive client (wait_timeout).
    pub const INTERACTIVE: u32 = 1 << 10;
    /// TLS.
    pub const SSL: u32 = 1 << 11;
    /// Transaction status in OK packets.
    pub const TRANSACTIONS: u32 = 1 << 13;
    /// 4.1 authentication.
    pub const SECURE_CONNECTION: u32 = 1 << 15;
    /// Several statements per COM_QUERY.
    pub const MULTI_STATEMENTS: u32 = 1 << 16;
    /// Several result sets per COM_QUERY.
    pub const MULTI_RESULTS: u32 = 1 << 17;
    /// Several result sets per COM_STMT_EXECUTE.
    pub const PS_MULTI_RESULTS: u32 = 1 << 18;
    /// Authentication plugins.
    pub const PLUGIN_AUTH: u32 = 1 << 19;
    /// Connection attributes.
    pub const CONNECT_ATTRS: u32 = 1 << 20;
    /// Length-encoded auth response.
    pub const PLUGIN_AUTH_LENENC_CLIENT_DATA: u32 = 1 << 21;
    /// Expired passwords.
    pub const CAN_HANDLE_EXPIRED_PASSWORDS: u32 = 1 << 22;
    /// Session state tracking in OK packets.
    pub const SESSION_TRACK: u32 = 1 << 23;
    /// OK packets instead of EOF packets.
    pub const DEPRECATE_EOF: u32 = 1 << 24;
}

/// Server status flags (`SERVER_*`).
pub mod status {
    /// A transaction is open.
    pub const IN_TRANS: u16 = 1;
    /// Autocommit is on.
    pub const AUTOCOMMIT: u16 = 2;
    /// Another result set follows.
    pub const MORE_RESULTS_EXISTS: u16 = 8;
    /// A cursor is open (COM_STMT_EXECUTE with a cursor).
    pub const CURSOR_EXISTS: u16 = 64;
    /// The cursor is exhausted.
    pub const LAST_ROW_SENT: u16 = 128;
    /// OUT parameters follow.
    pub const PS_OUT_PARAMS: u16 = 4096;
    /// Read-only transaction open.
    pub const IN_TRANS_READONLY: u16 = 8192;
    /// Session state changed (with CLIENT_SESSION_TRACK).
    pub const SESSION_STATE_CHANGED: u16 = 16384;
}

/// Command bytes (`COM_*`).
pub mod com {
    /// Close the connection.
    pub const QUIT: u8 = 0x01;
    /// Change the default schema.
    pub const INIT_DB: u8 = 0x02;
    /// Text query.
    pub const QUERY: u8 = 0x03;
    /// Column list of a table (deprecated).
    pub const FIELD_LIST: u8 = 0x04;
    /// Server statistics string.
    pub const STATISTICS: u8 = 0x09;
    /// Kill a thread.
    pub const PROCESS_KILL: u8 = 0x0c;
    /// Debug dump.
    pub const DEBUG: u8 = 0x0d;
    /// Ping.
    pub const PING: u8 = 0x0e;
    /// Re-authenticate as another user.
    pub const CHANGE_USER: u8 = 0x11;
    /// Prepare a statement.
    pub const STMT_PREPARE: u8 = 0x16;
    /// Execute a prepared statement.
    pub const STMT_EXECUTE: u8 = 0x17;
    /// Send a parameter's data in pieces.
    pub const STMT_SEND_LONG_DATA: u8 = 0x18;
    /// Close a prepared statement.
    pub const STMT_CLOSE: u8 = 0x19;
    /// Reset a prepared statement's long data and cursor.
    pub const STMT_RESET: u8 = 0x1a;
    /// Set an option (multi statements).
    pub const SET_OPTION: u8 = 0x1b;
    /// Fetch rows from a cursor.
    pub const STMT_FETCH: u8 = 0x1c;
    /// Reset the session.
    pub const RESET_CONNECTION: u8 = 0x1f;
}

/// Error numbers dgf sends, with their SQLSTATE.
pub mod errno {
    /// Access denied (bad password).
    pub const ACCESS_DENIED: (u16, &str) = (1045, "28000");
    /// Unknown command.
    pub const UNKNOWN_COM: (u16, &str) = (1047, "08S01");
    /// Too many connections.
    pub const TOO_MANY_CONNECTIONS: (u16, &str) = (1040, "08004");
    /// Packet too large.
    pub const NET_PACKET_TOO_LARGE: (u16, &str) = (1153, "08S01");
    /// A command packet shorter than its command needs (ER_MALFORMED_PACKET).
    pub const MALFORMED_PACKET: (u16, &str) = (1835, "HY000");
    /// Unknown prepared statement handler.
    pub const UNKNOWN_STMT_HANDLER: (u16, &str) = (1243, "HY000");
    /// Table access denied.
    pub const TABLEACCESS_DENIED: (u16, &str) = (1142, "42000");
    /// Column access denied.
    pub const COLUMNACCESS_DENIED: (u16, &str) = (1143, "42000");
    /// Generic access denied (statement kind).
    pub const SPECIFIC_ACCESS_DENIED: (u16, &str) = (1227, "42000");
    /// "You are not owner of thread" (KILL refused).
    pub const KILL_DENIED: (u16, &str) = (1095, "HY000");
    /// "Unknown thread id" (KILL of a connection id that is not the requester's to kill).
    pub const UNKNOWN_THREAD: (u16, &str) = (1094, "HY000");
    /// "Connection was killed" (MariaDB; a client's KILL of its own connection).
    pub const CONNECTION_KILLED: (u16, &str) = (1927, "70100");
    /// ER_QUERY_INTERRUPTED: the statement was killed (`KILL QUERY`).
    pub const QUERY_INTERRUPTED: (u16, &str) = (1317, "70100");
    /// LOAD DATA LOCAL refused.
    pub const NOT_ALLOWED_COMMAND: (u16, &str) = (1148, "42000");
    /// Lost connection to the upstream / cannot connect.
    pub const CONN_HOST_ERROR: (u16, &str) = (2003, "HY000");
    /// Lock wait timeout (used for pool wait timeout).
    pub const POOL_TIMEOUT: (u16, &str) = (1040, "08004");
    /// Secure transport required.
    pub const SECURE_TRANSPORT_REQUIRED: (u16, &str) = (3159, "HY000");
    /// Handshake error.
    pub const HANDSHAKE_ERROR: (u16, &str) = (1043, "08S01");
    /// A resource limit was exceeded (used for the route's ops/s budget).
    pub const USER_LIMIT_REACHED: (u16, &str) = (1226, "42000");
}

/// Authentication plugin names.
pub mod plugin {
    /// SHA-1 double hash challenge.
    pub const NATIVE: &str = "mysql_native_password";
    /// SHA-256 challenge with full authentication fallback.
    pub const CACHING_SHA2: &str = "caching_sha2_password";
    /// Cleartext (upstream only, over TLS).
    pub const CLEAR: &str = "mysql_clear_password";
}
