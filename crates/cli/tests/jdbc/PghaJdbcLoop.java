// An unmodified JDBC application in a loop, for crates/cli/tests/jdbc_ha.rs:
// one Connection for the whole run, autocommit off; each iteration runs a
// read-write transaction inserting row <n> with a PreparedStatement, then a
// setReadOnly(true) transaction reading it back. It never reconnects.
//
// Prints one line per event, flushed:
//   ack <n>                  the insert of row <n> committed
//   ok <n> <found> <port>    the iteration finished; <found> rows with id <n>
//                            were read back, on the server port <port>
//   err <n> <phase> <sqlstate> <message>   an error in phase write or read
//   closed <n>               the Connection is closed; the program exits 2
//   done <iterations>        the stop file appeared or the time ran out
// Usage: java -cp postgresql.jar:. PghaJdbcLoop <url> <user> <password>
//        <table> <stop-file> <max-seconds>

import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.util.Properties;

public class PghaJdbcLoop {
    static void line(String s) {
        System.out.println(s);
        System.out.flush();
    }

    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        props.setProperty("user", args[1]);
        props.setProperty("password", args[2]);
        String table = args[3];
        Path stop = Paths.get(args[4]);
        long deadline = System.currentTimeMillis() + Long.parseLong(args[5]) * 1000;
        int n = 0;
        try (Connection c = DriverManager.getConnection(args[0], props)) {
            c.setAutoCommit(false);
            PreparedStatement ins = c.prepareStatement(
                "INSERT INTO " + table + " (id, port) VALUES (?, inet_server_port())");
            PreparedStatement sel = c.prepareStatement(
                "SELECT count(*), inet_server_port() FROM " + table + " WHERE id = ?");
            while (!Files.exists(stop) && System.currentTimeMillis() < deadline) {
                n++;
                if (!iteration(c, ins, sel, n)) {
                    line("closed " + n);
                    System.exit(2);
                }
            }
        }
        line("done " + n);
    }

    // One iteration; false when the Connection is closed.
    static boolean iteration(Connection c, PreparedStatement ins, PreparedStatement sel, int n) {
        String phase = "write";
        try {
            c.setReadOnly(false);
            ins.setInt(1, n);
            ins.executeUpdate();
            c.commit();
            line("ack " + n);
            phase = "read";
            c.setReadOnly(true);
            long found;
            int port;
            sel.setInt(1, n);
            try (ResultSet r = sel.executeQuery()) {
                r.next();
                found = r.getLong(1);
                port = r.getInt(2);
            }
            c.commit();
            line("ok " + n + " " + found + " " + port);
        } catch (SQLException e) {
            String msg = String.valueOf(e.getMessage()).replace('\n', ' ');
            line("err " + n + " " + phase + " " + e.getSQLState() + " " + msg);
            try {
                c.rollback();
            } catch (SQLException r) {
                line("err " + n + " rollback " + r.getSQLState() + " "
                    + String.valueOf(r.getMessage()).replace('\n', ' '));
            }
        }
        try {
            return !c.isClosed();
        } catch (SQLException e) {
            return false;
        }
    }
}
