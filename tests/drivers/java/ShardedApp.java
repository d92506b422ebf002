// A small sharded application with pgjdbc through shardgate (run by
// tests/integration/sharded_app.rs, which also defines the data and the exact lines printed).
//
// Usage: java -cp .:/usr/share/java/postgresql.jar ShardedApp JDBC_URL USER PASSWORD BASE [plain]
//
// With `plain` the URL is an unsharded database (the test's diagnostic rerun): nothing is
// refused there, so the refusal steps are skipped.
//
// Users BASE+1 .. BASE+9 with their orders and order_items, sharded by user id; `plans` is a
// reference table. prepareThreshold=1: every PreparedStatement is a named server-side statement
// from its first execution. Transactions use setAutoCommit(false), where pgjdbc sends BEGIN in
// the same batch as the first statement, and the order items go in with addBatch/executeBatch,
// several statements per Sync. Any mismatch exits non-zero.

import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Objects;

public class ShardedApp {
    static final int USERS = 9;
    static final String[] PLANS = {"free", "pro", "team"};
    static long base;
    static boolean plain;

    static void check(String what, Object got, Object want) {
        if (!Objects.equals(got, want)) {
            throw new AssertionError(what + ": got " + got + ", want " + want);
        }
    }

    static long uid(int i) {
        return base + i;
    }

    static long order(int i, int k) {
        return uid(i) * 10 + k;
    }

    static PreparedStatement prep(Connection c, String sql, Object... params) throws SQLException {
        PreparedStatement ps = c.prepareStatement(sql);
        for (int p = 0; p < params.length; p++) {
            ps.setObject(p + 1, params[p]);
        }
        return ps;
    }

    static int update(Connection c, String sql, Object... params) throws SQLException {
        try (PreparedStatement ps = prep(c, sql, params)) {
            int n = ps.executeUpdate();
            check("server-prepared: " + sql, ps.unwrap(org.postgresql.PGStatement.class).isUseServerPrepare(), true);
            return n;
        }
    }

    /** The rows of a query, each row's columns joined by `sep`. */
    static List<String> rows(Connection c, String sep, String sql, Object... params) throws SQLException {
        List<String> out = new ArrayList<>();
        try (PreparedStatement ps = prep(c, sql, params); ResultSet rs = ps.executeQuery()) {
            int n = rs.getMetaData().getColumnCount();
            while (rs.next()) {
                List<String> cols = new ArrayList<>();
                for (int i = 1; i <= n; i++) {
                    cols.add(rs.getString(i));
                }
                out.add(String.join(sep, cols));
            }
        }
        return out;
    }

    static void load(Connection c) throws SQLException {
        c.setAutoCommit(false);
        String items = "INSERT INTO order_items (user_id, order_id, line, sku, qty, price_cents) VALUES (?, ?, ?, ?, ?, ?)";
        for (int i = 1; i <= USERS; i++) {
            long u = uid(i);
            check("user", update(c, "INSERT INTO users (id, name, plan) VALUES (?, ?, ?)", u, "user " + u, PLANS[i % 3]), 1);
            check("orders", update(c, "INSERT INTO orders (user_id, id, status) VALUES (?, ?, 'new'), (?, ?, 'new')",
                    u, order(i, 1), u, order(i, 2)), 2);
            try (PreparedStatement ps = c.prepareStatement(items)) {
                for (int k = 1; k <= 2; k++) {
                    for (int line = 1; line <= 2; line++) {
                        ps.setLong(1, u);
                        ps.setLong(2, order(i, k));
                        ps.setInt(3, line);
                        ps.setString(4, "sku-" + k + "-" + line);
                        ps.setInt(5, i + line);
                        ps.setInt(6, 100 * k + line);
                        ps.addBatch();
                    }
                }
                check("batch", Arrays.toString(ps.executeBatch()), "[1, 1, 1, 1]");
            }
            c.commit();
        }
        c.setAutoCommit(true);
        System.out.println("loaded: " + USERS + " users, " + USERS * 2 + " orders, " + USERS * 4 + " items");
    }

    static void readBack(Connection c) throws SQLException {
        String sql = "SELECT name, plan, (SELECT count(*) FROM orders WHERE user_id = ?) FROM users WHERE id = ?";
        for (int i = 1; i <= USERS; i++) {
            check("user " + uid(i), rows(c, "|", sql, uid(i), uid(i)),
                    List.of("user " + uid(i) + "|" + PLANS[i % 3] + "|2"));
        }
        System.out.println("read back: " + USERS + " users by key");
    }

    static void change(Connection c) throws SQLException {
        int deleted = 0;
        for (int i = 1; i <= USERS; i++) {
            check("paid", update(c, "UPDATE orders SET status = 'paid' WHERE user_id = ? AND id = ?", uid(i), order(i, 1)), 1);
            if (i % 2 == 0) {
                deleted += update(c, "DELETE FROM order_items WHERE user_id = ? AND order_id = ? AND line = 2", uid(i), order(i, 2));
            }
        }
        long gone = uid(USERS);
        c.setAutoCommit(false);
        List<Integer> counts = new ArrayList<>();
        for (String table : new String[] {"order_items WHERE user_id", "orders WHERE user_id", "users WHERE id"}) {
            counts.add(update(c, "DELETE FROM " + table + " = ?", gone));
        }
        c.commit();
        c.setAutoCommit(true);
        check("deleted", counts, List.of(4, 2, 1));
        System.out.println("changed: " + USERS + " orders paid, " + deleted + " items deleted, user " + gone
                + " deleted with 4 items and 2 orders");
    }

    static void join(Connection c) throws SQLException {
        long u = uid(2);
        List<String> rows = rows(c, "/", "SELECT o.id, o.status, it.line, it.sku, it.qty FROM users u "
                + "JOIN orders o ON o.user_id = u.id "
                + "JOIN order_items it ON it.user_id = o.user_id AND it.order_id = o.id "
                + "WHERE u.id = ? ORDER BY o.id, it.line", u);
        System.out.println("join " + u + ": " + String.join(", ", rows));
    }

    static void reference(Connection c) throws SQLException {
        List<String> plans = rows(c, "=", "SELECT code, price_cents FROM plans WHERE price_cents >= ? ORDER BY code", 0);
        System.out.println("plans: " + String.join(" ", plans));
        long u = uid(1);
        List<String> plan = rows(c, " ", "SELECT p.name, p.price_cents FROM users u JOIN plans p ON p.code = u.plan WHERE u.id = ?", u);
        System.out.println("plan of " + u + ": " + String.join("", plan));
    }

    static void aggregates(Connection c) throws SQLException {
        List<String> total = rows(c, " sum=", "SELECT count(*), sum(qty * price_cents) FROM order_items WHERE qty > ?", 0);
        System.out.println("items: count=" + total.get(0));
        List<String> perPlan = rows(c, "=", "SELECT plan, count(*) FROM users GROUP BY plan ORDER BY plan");
        System.out.println("users per plan: " + String.join(" ", perPlan));
        List<String> last = rows(c, "", "SELECT id FROM users ORDER BY id DESC LIMIT ?", 3);
        System.out.println("last users: " + String.join(",", last));
        List<String> top = rows(c, "=", "SELECT user_id, sum(qty) FROM order_items GROUP BY user_id ORDER BY 2 DESC, 1 LIMIT 3");
        System.out.println("top buyers: " + String.join(",", top));
    }

    static String sqlstate(Connection c, String sql, Object... params) {
        try {
            update(c, sql, params);
            throw new AssertionError("accepted: " + sql);
        } catch (SQLException e) {
            return e.getSQLState();
        }
    }

    static void refused(Connection c) throws SQLException {
        if (plain) {
            System.out.println("refused: skipped on a plain database");
            return;
        }
        String noKey = "UPDATE orders SET status = 'void' WHERE status = ?";
        check("sqlstate", sqlstate(c, noKey, "new"), "0A000");
        check("after the refusal", rows(c, "", "SELECT status FROM orders WHERE user_id = ? AND id = ?", uid(1), order(1, 2)),
                List.of("new"));
        System.out.println("refused: 0A000, connection usable");
        long u = uid(1);
        String setPlan = "UPDATE users SET plan = 'team' WHERE id = ?";
        c.setAutoCommit(false);
        check("update", update(c, setPlan, u), 1);
        String first = sqlstate(c, noKey, "paid");
        String then = sqlstate(c, setPlan, u);
        c.rollback();
        c.setAutoCommit(true);
        check("plan after rollback", rows(c, "", "SELECT plan FROM users WHERE id = ?", u), List.of("pro"));
        System.out.println("refused in a transaction: " + first + " then " + then + ", rolled back");
    }

    public static void main(String[] args) throws Exception {
        base = Long.parseLong(args[3]);
        plain = args.length > 4 && args[4].equals("plain");
        java.util.Properties p = new java.util.Properties();
        p.setProperty("user", args[1]);
        p.setProperty("password", args[2]);
        p.setProperty("prepareThreshold", "1");
        p.setProperty("sslmode", "disable");
        p.setProperty("connectTimeout", "30");
        try (Connection c = DriverManager.getConnection(args[0], p)) {
            load(c);
            readBack(c);
            change(c);
            join(c);
            reference(c);
            aggregates(c);
            refused(c);
        }
        System.out.println("OK");
    }
}
