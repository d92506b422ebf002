// pgjdbc through shardgate (run by tests/integration/drivers.rs).
//
// Usage: java -cp .:/usr/share/java/postgresql.jar PgJdbcTest HOST PORT USER PASSWORD
//
// Eight threads, each with its own connection, over the proxy's pool of 2: server-side prepared
// statements from the first use (prepareThreshold=1) reused 50 times, addBatch/executeBatch of 500
// rows per connection, and setAutoCommit(false) transactions, where pgjdbc sends BEGIN without a Sync in front of
// the first statement. Every check compares exact values; any mismatch exits non-zero. The lines
// printed are exact and asserted by the Rust test.

import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashSet;
import java.util.List;
import java.util.Objects;
import java.util.Set;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;

public class PgJdbcTest {
    static final int THREADS = 8;
    static final int RUNS = 50;
    static final int BATCH = 500;
    static String url;
    static String user;
    static String password;
    static final List<Set<Integer>> pids = new ArrayList<>();

    static void check(String what, Object got, Object want) {
        if (!Objects.equals(got, want)) {
            throw new AssertionError(what + ": got " + got + ", want " + want);
        }
    }

    static Connection connect() throws SQLException {
        java.util.Properties p = new java.util.Properties();
        p.setProperty("user", user);
        p.setProperty("password", password);
        p.setProperty("prepareThreshold", "1");
        p.setProperty("sslmode", "disable");
        p.setProperty("connectTimeout", "30");
        return DriverManager.getConnection(url, p);
    }

    interface Work {
        Object run(int i) throws Exception;
    }

    static List<Object> inThreads(Work w) throws Exception {
        ExecutorService ex = Executors.newFixedThreadPool(THREADS);
        List<Future<Object>> fs = new ArrayList<>();
        for (int i = 0; i < THREADS; i++) {
            final int n = i;
            fs.add(ex.submit(() -> w.run(n)));
        }
        List<Object> out = new ArrayList<>();
        for (Future<Object> f : fs) {
            out.add(f.get(120, TimeUnit.SECONDS));
        }
        ex.shutdown();
        return out;
    }

    static int pid(Connection c) throws SQLException {
        try (PreparedStatement ps = c.prepareStatement("select pg_backend_pid()");
                ResultSet rs = ps.executeQuery()) {
            rs.next();
            return rs.getInt(1);
        }
    }

    static long scalar(Connection c, String sql, Object... args) throws SQLException {
        try (PreparedStatement ps = c.prepareStatement(sql)) {
            for (int k = 0; k < args.length; k++) {
                ps.setObject(k + 1, args[k]);
            }
            try (ResultSet rs = ps.executeQuery()) {
                rs.next();
                return rs.getLong(1);
            }
        }
    }

    /** One PreparedStatement, server-prepared from its first execution, run 50 times. */
    static Object prepared(int i) throws Exception {
        try (Connection c = connect()) {
            try (PreparedStatement ps = c.prepareStatement(
                    "select ?::int * 100 + ?::int, ?::text || '!', pg_backend_pid()")) {
                for (int n = 0; n < RUNS; n++) {
                    ps.setInt(1, n);
                    ps.setInt(2, i);
                    ps.setString(3, "c" + i);
                    try (ResultSet rs = ps.executeQuery()) {
                        check("row", rs.next(), true);
                        check("value", rs.getInt(1), n * 100 + i);
                        check("text", rs.getString(2), "c" + i + "!");
                        pids.get(i).add(rs.getInt(3));
                        check("one row", rs.next(), false);
                    }
                }
                check("server prepared", ps.unwrap(org.postgresql.PGStatement.class).isUseServerPrepare(), true);
            }
            // Closed and prepared again (pgjdbc's statement cache hands the same server statement back).
            for (int n = 0; n < 10; n++) {
                check("re-prepared", scalar(c, "select ?::int + 1", n), (long) n + 1);
            }
        }
        return null;
    }

    /** addBatch/executeBatch: many Parse/Bind/Execute before one Sync. */
    static Object batch(int i) throws Exception {
        int rows = BATCH;
        try (Connection c = connect()) {
            try (PreparedStatement ps = c.prepareStatement("insert into jdbc_items (id, thread, name) values (?, ?, ?)")) {
                for (int n = 0; n < rows; n++) {
                    ps.setInt(1, i * 10000 + n);
                    ps.setInt(2, i);
                    ps.setString(3, "b" + n);
                    ps.addBatch();
                }
                int[] counts = ps.executeBatch();
                check("batch size", counts.length, rows);
                for (int k : counts) {
                    check("batch count", k, 1);
                }
            }
            check("rows", scalar(c, "select count(*) from jdbc_items where thread = ?", i), (long) rows);
            pids.get(i).add(pid(c));
        }
        return rows;
    }

    /** setAutoCommit(false): BEGIN goes out without a Sync, in front of the first statement. */
    static Object transactions(int i) throws Exception {
        try (Connection c = connect()) {
            c.setAutoCommit(false);
            try (PreparedStatement upd = c.prepareStatement("update jdbc_items set name = ? where id = ?");
                    PreparedStatement ins = c.prepareStatement("insert into jdbc_items (id, thread, name) values (?, ?, ?)")) {
                for (int n = 0; n < 10; n++) {
                    int p1 = pid(c);
                    upd.setString(1, "tx" + n);
                    upd.setInt(2, i * 10000 + n);
                    check("updated", upd.executeUpdate(), 1);
                    check("same backend in a transaction", pid(c), p1);
                    c.commit();
                    pids.get(i).add(p1);
                }
                // Rolled back: neither the insert nor the updates stay.
                ins.setInt(1, i * 10000 + 9999);
                ins.setInt(2, i);
                ins.setString(3, "gone");
                check("inserted", ins.executeUpdate(), 1);
                upd.setString(1, "gone");
                upd.setInt(2, i * 10000);
                upd.executeUpdate();
                c.rollback();
                check("after rollback", scalar(c, "select count(*) from jdbc_items where thread = ? and name = 'gone'", i), 0L);
                c.commit();
                // A batch inside a transaction that fails half-way: rolled back whole.
                for (int n = 0; n < 3; n++) {
                    ins.setInt(1, i * 10000 + 5000 + n);
                    ins.setInt(2, i);
                    ins.setString(3, "dup");
                    ins.addBatch();
                }
                ins.setInt(1, i * 10000); // duplicate key
                ins.setInt(2, i);
                ins.setString(3, "dup");
                ins.addBatch();
                String state = null;
                try {
                    ins.executeBatch();
                } catch (java.sql.BatchUpdateException e) {
                    SQLException cause = e.getNextException() != null ? e.getNextException() : e;
                    state = cause.getSQLState();
                }
                check("batch error sqlstate", state, "23505");
                String failed = null;
                try {
                    pid(c);
                } catch (SQLException e) {
                    failed = e.getSQLState();
                }
                check("failed transaction sqlstate", failed, "25P02");
                c.rollback();
                check("after failed batch", scalar(c, "select count(*) from jdbc_items where thread = ? and name = 'dup'", i), 0L);
                c.commit();
            }
            // An error with autocommit on, and the connection still works.
            c.setAutoCommit(true);
            String state = null;
            try (Statement st = c.createStatement()) {
                st.executeQuery("select 1 / 0");
            } catch (SQLException e) {
                state = e.getSQLState();
            }
            check("division by zero", state, "22012");
            check("after error", scalar(c, "select ?::int", 5), 5L);
        }
        return null;
    }

    public static void main(String[] args) throws Exception {
        url = "jdbc:postgresql://" + args[0] + ":" + args[1] + "/app";
        user = args[2];
        password = args[3];
        System.out.println("pgjdbc " + org.postgresql.Driver.getVersion() + " java " + System.getProperty("java.version"));
        for (int i = 0; i < THREADS; i++) {
            pids.add(Collections.synchronizedSet(new HashSet<>()));
        }
        try (Connection c = connect(); Statement st = c.createStatement()) {
            st.execute("drop table if exists jdbc_items");
            st.execute("create table jdbc_items (id int primary key, thread int not null, name text not null)");
        }

        inThreads(PgJdbcTest::prepared);
        System.out.println("prepared: " + THREADS + " connections x " + RUNS + " runs, server-prepared");

        int total = 0;
        for (Object o : inThreads(PgJdbcTest::batch)) {
            total += (Integer) o;
        }
        check("batch total", total, THREADS * BATCH);
        System.out.println("batch: " + THREADS + " connections x " + BATCH + " rows");

        inThreads(PgJdbcTest::transactions);
        System.out.println("transactions: commit, rollback, failed batch 23505 then 25P02, 22012");

        try (Connection c = connect()) {
            check("final count", scalar(c, "select count(*) from jdbc_items"), (long) THREADS * BATCH);
            check("committed updates", scalar(c, "select count(*) from jdbc_items where name like 'tx%'"), (long) THREADS * 10);
        }
        System.out.println("counts: " + THREADS * BATCH + " rows, " + THREADS * 10 + " updated");
        int moved = 0;
        for (Set<Integer> s : pids) {
            moved = Math.max(moved, s.size());
        }
        System.out.println("moved: " + (moved > 1));
        System.out.println("OK");
    }
}
