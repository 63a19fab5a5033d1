// A small JDBC workload through the proxy's rw port, in the shape of a
// Spring service: read-only transactions (setReadOnly(true), which pgjdbc
// sends as BEGIN READ ONLY), one PreparedStatement executed more than five
// times (pgjdbc then switches to a named server-side statement), a batch, a
// read-write transaction, a rolled-back one, and reads of its own writes.
// Prints key=value lines; crates/proxy/tests/drivers.rs checks them.
// Usage: java -cp postgresql.jar:. PghaJdbc <jdbc-url> <user> <password>

import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.Statement;
import java.util.Properties;

public class PghaJdbc {
    static void out(String key, Object value) {
        System.out.println(key + "=" + value);
    }

    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        props.setProperty("user", args[1]);
        props.setProperty("password", args[2]);
        try (Connection c = DriverManager.getConnection(args[0], props)) {
            readOnlyTransactions(c, "ro");
            writes(c);
            readOnlyTransactions(c, "ryw");
            rollback(c);
            autocommitReads(c);
            serializableReadOnly(c);
        }
        out("done", "ok");
    }

    // Eight read-only transactions, each running the same PreparedStatement
    // twice (16 executions in all: named server-side statement after 5).
    static void readOnlyTransactions(Connection c, String label) throws Exception {
        c.setAutoCommit(false);
        c.setReadOnly(true);
        try (PreparedStatement ps = c.prepareStatement(
                "SELECT count(*), coalesce(sum(v), 0), current_setting('pgha_test.port')::int FROM jdbc_items WHERE id > ?")) {
            for (int tx = 0; tx < 8; tx++) {
                long count = -1, sum = -1;
                int port = -1;
                for (int i = 0; i < 2; i++) {
                    ps.setInt(1, 0);
                    try (ResultSet r = ps.executeQuery()) {
                        r.next();
                        count = r.getLong(1);
                        sum = r.getLong(2);
                        port = r.getInt(3);
                    }
                }
                c.commit();
                out(label + "_port", port);
                out(label + "_count", count);
                out(label + "_sum", sum);
            }
        }
        c.setReadOnly(false);
        c.setAutoCommit(true);
    }

    // One read-write transaction: seven executions of one insert, a batch,
    // and an update, committed together.
    static void writes(Connection c) throws Exception {
        c.setAutoCommit(false);
        try (PreparedStatement ins = c.prepareStatement(
                "INSERT INTO jdbc_items (id, v) VALUES (?, ?)")) {
            for (int i = 1; i <= 7; i++) {
                ins.setInt(1, i);
                ins.setInt(2, i * 10);
                ins.executeUpdate();
            }
            for (int i = 8; i <= 10; i++) {
                ins.setInt(1, i);
                ins.setInt(2, i * 10);
                ins.addBatch();
            }
            out("batch", ins.executeBatch().length);
        }
        try (PreparedStatement up = c.prepareStatement(
                "UPDATE jdbc_items SET v = v + 1 WHERE id = ? RETURNING current_setting('pgha_test.port')::int")) {
            up.setInt(1, 1);
            try (ResultSet r = up.executeQuery()) {
                r.next();
                out("rw_port", r.getInt(1));
            }
        }
        c.commit();
        c.setAutoCommit(true);
    }

    static void rollback(Connection c) throws Exception {
        c.setAutoCommit(false);
        try (Statement s = c.createStatement()) {
            s.executeUpdate("INSERT INTO jdbc_items (id, v) VALUES (1000, 1)");
        }
        c.rollback();
        c.setAutoCommit(true);
        try (Statement s = c.createStatement();
             ResultSet r = s.executeQuery("SELECT count(*) FROM jdbc_items WHERE id = 1000")) {
            r.next();
            out("rolled_back_count", r.getLong(1));
        }
    }

    // Autocommit reads of the same PreparedStatement, more than five times.
    static void autocommitReads(Connection c) throws Exception {
        try (PreparedStatement ps = c.prepareStatement("SELECT v FROM jdbc_items WHERE id = ?")) {
            long total = 0;
            for (int i = 1; i <= 10; i++) {
                ps.setInt(1, i);
                try (ResultSet r = ps.executeQuery()) {
                    r.next();
                    total += r.getLong(1);
                }
            }
            out("autocommit_sum", total);
        }
    }

    // A serializable read-only transaction as pgjdbc sends it: SET SESSION
    // CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE, then
    // BEGIN READ ONLY.
    static void serializableReadOnly(Connection c) throws Exception {
        c.setAutoCommit(false);
        c.setReadOnly(true);
        c.setTransactionIsolation(Connection.TRANSACTION_SERIALIZABLE);
        try (PreparedStatement ps = c.prepareStatement(
                "SELECT count(*), coalesce(sum(v), 0), current_setting('pgha_test.port')::int FROM jdbc_items WHERE id > ?")) {
            ps.setInt(1, 0);
            try (ResultSet r = ps.executeQuery()) {
                r.next();
                out("ser_port", r.getInt(3));
                out("ser_count", r.getLong(1));
                out("ser_sum", r.getLong(2));
            }
        }
        c.commit();
        c.setTransactionIsolation(Connection.TRANSACTION_READ_COMMITTED);
        c.setReadOnly(false);
        c.setAutoCommit(true);
    }
}
