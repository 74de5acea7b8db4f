package flux.test;

import java.io.File;
import java.io.FileDescriptor;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.PrintStream;
import java.net.URI;
import java.nio.charset.StandardCharsets;
import java.security.PrivilegedExceptionAction;
import java.util.Arrays;
import java.util.Properties;
import java.util.Random;
import java.util.UUID;
import java.util.logging.Level;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.BlockLocation;
import org.apache.hadoop.fs.FSDataInputStream;
import org.apache.hadoop.fs.FSDataOutputStream;
import org.apache.hadoop.fs.FileStatus;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.FileUtil;
import org.apache.hadoop.fs.Path;
import org.apache.hadoop.hdfs.HdfsConfiguration;
import org.apache.hadoop.hdfs.MiniDFSCluster;
import org.apache.hadoop.hdfs.server.datanode.DataNode;
import org.apache.hadoop.security.UserGroupInformation;

/**
 * A single-datanode HDFS for flux's integration tests.
 *
 * <pre>
 *   MiniDfs PORT BASEDIR          start a cluster (PORT 0 = any free port)
 *   MiniDfs --selftest HDFS_URI   write, read back and delete a file in a running cluster
 * </pre>
 *
 * <p>Server mode protocol: once the cluster accepts reads and writes, exactly one line
 * {@code READY hdfs://127.0.0.1:<port>} is printed to stdout (nothing else ever goes to
 * stdout; logs go to stderr). The process shuts the cluster down and exits when its stdin
 * reaches EOF (so it dies with the test process that spawned it; exit status 0, or 1 if that
 * happens before READY) or on SIGTERM/SIGINT/SIGHUP (status 128 + signal number). Startup
 * failures exit with 1, usage errors with 2. The cluster's files go to subdirectories of
 * BASEDIR (dfs/, tmp/), removed on shutdown; BASEDIR itself is left to the caller.
 *
 * <p>Everything listens on 127.0.0.1 only and the datanode registers as 127.0.0.1, so a
 * client that connects to datanodes by IP (hdfs-native's default) reaches it. No security,
 * permission checks off (any user may write anywhere), replication 1.
 */
public final class MiniDfs {

    /** Seconds the shutdown may take before the JVM is halted regardless. */
    private static final int SHUTDOWN_GRACE_SECONDS = 20;

    private static volatile MiniDFSCluster cluster;
    private static volatile boolean ready;
    private static volatile File[] scratchDirs = new File[0];

    /** Held so the level set on it is not lost to garbage collection. */
    private static final java.util.logging.Logger JERSEY_LOG =
            java.util.logging.Logger.getLogger("com.sun.jersey");

    private MiniDfs() {}

    public static void main(String[] args) {
        // Loopback is 127.0.0.1 for everybody, whatever "localhost" resolves to first.
        System.setProperty("java.net.preferIPv4Stack", "true");
        // WebHDFS (Jersey 1 + JAXB 2.2) would otherwise need
        // --add-opens java.base/java.lang=ALL-UNNAMED on Java 17 for JAXB's class injection.
        System.setProperty("com.sun.xml.bind.v2.bytecode.ClassTailor.noOptimize", "true");
        // Keep the real stdout for the protocol line(s) only: anything Hadoop (or anything
        // else) prints to System.out ends up on stderr instead.
        PrintStream protocol =
                new PrintStream(new FileOutputStream(FileDescriptor.out), true, StandardCharsets.UTF_8);
        System.setOut(System.err);
        configureLogging();

        int code;
        try {
            if (args.length == 2 && args[0].equals("--selftest")) {
                code = selftest(args[1], protocol);
            } else if (args.length == 2) {
                code = serve(args[0], args[1], protocol);
            } else {
                log("usage: MiniDfs PORT BASEDIR | MiniDfs --selftest hdfs://HOST:PORT");
                code = 2;
            }
        } catch (Throwable t) {
            log("failed: " + t);
            t.printStackTrace(System.err);
            for (File dir : scratchDirs) {
                FileUtil.fullyDelete(dir);
            }
            code = 1;
        }
        System.exit(code);
    }

    // ---------------------------------------------------------------- server mode

    private static int serve(String portArg, String baseDirArg, PrintStream protocol) throws Exception {
        int port;
        try {
            port = Integer.parseInt(portArg);
        } catch (NumberFormatException e) {
            log("PORT must be a number (0 = any free port), got: " + portArg);
            return 2;
        }
        if (port < 0 || port > 65535) {
            log("PORT out of range: " + port);
            return 2;
        }
        File baseDir = new File(baseDirArg).getAbsoluteFile();
        if (!baseDir.isDirectory() && !baseDir.mkdirs()) {
            log("cannot create BASEDIR " + baseDir);
            return 2;
        }

        // The cluster's files live in subdirectories of BASEDIR, deleted on shutdown;
        // BASEDIR itself belongs to the caller.
        scratchDirs = new File[] {
            new File(baseDir, "dfs"), new File(baseDir, "tmp"), new File(baseDir, "logs"),
        };

        // Shut down cleanly on SIGTERM / SIGINT / SIGHUP. This is done from a signal handler
        // rather than a JVM shutdown hook: the cluster cannot shut down cleanly while the
        // JVM is already exiting (Hadoop's ShutdownHookManager refuses hook removals then).
        for (String sig : new String[] {"TERM", "INT", "HUP"}) {
            try {
                sun.misc.Signal.handle(new sun.misc.Signal(sig),
                        s -> stopAndExit(128 + s.getNumber(), "got SIG" + s.getName()));
            } catch (IllegalArgumentException e) {
                log("cannot handle SIG" + sig + ": " + e.getMessage());
            }
        }
        // Last resort if the JVM exits some other way with the cluster still up.
        Runtime.getRuntime().addShutdownHook(new Thread(MiniDfs::shutdownCluster, "minidfs-shutdown-hook"));
        // Exit when the parent closes our stdin (or dies). Started before the cluster so a
        // parent that dies during startup does not leave us behind.
        Thread stdinWatcher = new Thread(MiniDfs::watchStdin, "minidfs-stdin-watcher");
        stdinWatcher.setDaemon(true);
        stdinWatcher.start();

        long started = System.nanoTime();
        Configuration conf = clusterConf(baseDir);
        // Some test utilities fall back to these for scratch space; keep it all in BASEDIR.
        System.setProperty("test.build.data", new File(baseDir, "tmp").getPath());
        System.setProperty("hadoop.log.dir", new File(baseDir, "logs").getPath());
        // Jetty unpacks the web UIs under java.io.tmpdir; keep that inside BASEDIR too.
        File tmp = new File(baseDir, "tmp");
        tmp.mkdirs();
        System.setProperty("java.io.tmpdir", tmp.getPath());

        MiniDFSCluster c = new MiniDFSCluster.Builder(conf)
                .numDataNodes(1)
                .nameNodePort(port)
                .nameNodeHttpPort(0)
                .format(true)
                .manageNameDfsDirs(true)
                .manageDataDfsDirs(true)
                .checkDataNodeAddrConfig(true) // use our 127.0.0.1:0 addresses
                .checkDataNodeHostConfig(true) // use our dfs.datanode.hostname
                .checkExitOnShutdown(false)
                .waitSafeMode(true)
                .build();
        cluster = c;
        c.waitActive();
        c.waitClusterUp();

        int nnPort = c.getNameNodePort();
        for (DataNode dn : c.getDataNodes()) {
            log("datanode " + dn.getDatanodeId().getIpAddr() + ":" + dn.getXferPort()
                    + " (hostname " + dn.getDatanodeId().getHostName() + ")");
        }
        log("namenode rpc 127.0.0.1:" + c.getNameNodePort()
                + ", http " + c.getNameNode().getHttpAddress());
        log(String.format("cluster up in %.1f s, base dir %s",
                (System.nanoTime() - started) / 1e9, baseDir));

        ready = true;
        protocol.println("READY hdfs://127.0.0.1:" + nnPort);
        protocol.flush();

        // Park the main thread; the stdin watcher or a signal ends the process.
        while (true) {
            Thread.sleep(Long.MAX_VALUE);
        }
    }

    private static Configuration clusterConf(File baseDir) {
        Configuration conf = new HdfsConfiguration();
        conf.set(MiniDFSCluster.HDFS_MINIDFS_BASEDIR, new File(baseDir, "dfs").getPath());
        conf.set("hadoop.tmp.dir", new File(baseDir, "tmp").getPath());

        // No security, no permission checks: any (simple-auth) user may write anywhere.
        conf.set("hadoop.security.authentication", "simple");
        conf.setBoolean("hadoop.security.authorization", false);
        conf.setBoolean("dfs.permissions.enabled", false);
        conf.setBoolean("dfs.block.access.token.enable", false);

        conf.setInt("dfs.replication", 1);
        // Let clients choose tiny block sizes (e.g. to test multi-block files cheaply).
        conf.setLong("dfs.namenode.fs-limits.min-block-size", 4096);

        // MiniDFSCluster advertises the namenode as "localhost:<port>"; bind it to 127.0.0.1
        // whatever "localhost" resolves to.
        conf.set("dfs.namenode.rpc-bind-host", "127.0.0.1");
        conf.set("dfs.namenode.servicerpc-bind-host", "127.0.0.1");
        conf.set("dfs.namenode.lifeline.rpc-bind-host", "127.0.0.1");
        conf.set("dfs.namenode.http-bind-host", "127.0.0.1");
        conf.set("dfs.namenode.https-bind-host", "127.0.0.1");

        // Datanode: listen on loopback and register as 127.0.0.1. The namenode records the
        // datanode's IP from the registering connection (127.0.0.1, since the namenode
        // itself is bound to 127.0.0.1), and clients get that IP + the xfer port.
        conf.set("dfs.datanode.address", "127.0.0.1:0");
        conf.set("dfs.datanode.http.address", "127.0.0.1:0");
        conf.set("dfs.datanode.ipc.address", "127.0.0.1:0");
        conf.set("dfs.datanode.hostname", "127.0.0.1");
        conf.setBoolean("dfs.client.use.datanode.hostname", false);
        conf.setBoolean("dfs.datanode.use.datanode.hostname", false);
        // No reverse DNS of the datanode's address at registration.
        conf.setBoolean("dfs.namenode.datanode.registration.ip-hostname-check", false);

        // Start fast and do not sit in safe mode.
        conf.setInt("dfs.namenode.safemode.extension", 0);
        conf.setLong("dfs.heartbeat.interval", 1);
        return conf;
    }

    private static void watchStdin() {
        byte[] buf = new byte[1024];
        try {
            InputStream in = System.in;
            while (in.read(buf) >= 0) {
                // Input is ignored; only EOF matters.
            }
            // Before READY this is a failure: whoever started us has given up on us.
            stopAndExit(ready ? 0 : 1, "stdin closed" + (ready ? "" : " before the cluster was ready"));
        } catch (IOException e) {
            stopAndExit(ready ? 0 : 1, "stdin unreadable (" + e + ")");
        }
    }

    /** Shuts the cluster down (bounded in time) and exits the JVM with {@code code}. */
    private static void stopAndExit(int code, String why) {
        log(why + ", shutting down");
        Thread watchdog = new Thread(() -> {
            try {
                Thread.sleep(SHUTDOWN_GRACE_SECONDS * 1000L);
            } catch (InterruptedException e) {
                return;
            }
            log("shutdown took over " + SHUTDOWN_GRACE_SECONDS + " s, halting");
            Runtime.getRuntime().halt(code == 0 ? 3 : code);
        }, "minidfs-shutdown-watchdog");
        watchdog.setDaemon(true);
        watchdog.start();
        shutdownCluster();
        System.exit(code);
    }

    private static synchronized void shutdownCluster() {
        MiniDFSCluster c = cluster;
        cluster = null;
        if (c == null) {
            // Not (or no longer) running: still drop whatever a startup left behind.
            for (File dir : scratchDirs) {
                FileUtil.fullyDelete(dir);
            }
            return;
        }
        if (System.getenv("MINIDFS_LOG") == null) {
            // Stopping daemons log interrupted threads at WARN/ERROR; that is expected noise.
            org.apache.log4j.LogManager.getRootLogger().setLevel(org.apache.log4j.Level.OFF);
        }
        try {
            c.shutdown();
            log("cluster shut down");
        } catch (Throwable t) {
            log("error during shutdown: " + t);
        }
        for (File dir : scratchDirs) {
            FileUtil.fullyDelete(dir);
        }
    }

    // ---------------------------------------------------------------- self-test mode

    /**
     * As a user other than the cluster's, writes a file (several packets, two blocks) into a
     * fresh directory under /, reads it back, checks contents, owner and block locations
     * (datanode must be 127.0.0.1), appends to it, makes and deletes nested directories,
     * renames, lists and deletes it all. Prints {@code SELFTEST OK ...} on success.
     */
    private static int selftest(String uriArg, PrintStream protocol) throws Exception {
        URI uri = URI.create(uriArg);
        Configuration conf = new HdfsConfiguration();
        conf.set("fs.defaultFS", uriArg);
        conf.setInt("dfs.replication", 1);
        conf.setBoolean("dfs.client.use.datanode.hostname", false);
        conf.setInt("ipc.client.connect.max.retries", 2);
        String user = "flux-selftest";
        UserGroupInformation ugi = UserGroupInformation.createRemoteUser(user);
        return ugi.doAs((PrivilegedExceptionAction<Integer>) () -> {
            try (FileSystem fs = FileSystem.newInstance(uri, conf)) {
                Path dir = new Path("/flux-selftest-" + UUID.randomUUID());
                Path file = new Path(dir, "data.bin");
                long blockSize = 1024 * 1024;
                byte[] data = new byte[(int) (blockSize + 300 * 1024 + 17)]; // 2 blocks
                new Random(42).nextBytes(data);

                try (FSDataOutputStream out = fs.create(file, true, 64 * 1024, (short) 1, blockSize)) {
                    out.write(data);
                }
                byte[] back = new byte[data.length];
                try (FSDataInputStream in = fs.open(file)) {
                    in.readFully(back);
                    if (in.read() != -1) {
                        throw new IOException("file longer than written");
                    }
                }
                if (!Arrays.equals(data, back)) {
                    throw new IOException("read-back differs from what was written");
                }
                FileStatus st = fs.getFileStatus(file);
                if (st.getLen() != data.length) {
                    throw new IOException("length " + st.getLen() + " != " + data.length);
                }
                if (!st.getOwner().equals(user)) {
                    throw new IOException("owner " + st.getOwner() + " != " + user);
                }
                BlockLocation[] locs = fs.getFileBlockLocations(st, 0, st.getLen());
                if (locs.length != 2) {
                    throw new IOException("expected 2 blocks, got " + locs.length);
                }
                for (BlockLocation loc : locs) {
                    for (String name : loc.getNames()) {
                        if (!name.startsWith("127.0.0.1:")) {
                            throw new IOException("datanode registered as " + name + ", not 127.0.0.1");
                        }
                    }
                }
                try (FSDataOutputStream out = fs.append(file)) {
                    out.write(new byte[] {1, 2, 3});
                }
                if (fs.getFileStatus(file).getLen() != data.length + 3) {
                    throw new IOException("append did not grow the file");
                }
                Path nested = new Path(dir, "a/b/c");
                if (!fs.mkdirs(nested) || !fs.getFileStatus(nested).isDirectory()) {
                    throw new IOException("mkdirs failed");
                }
                if (!fs.delete(new Path(dir, "a"), true)) {
                    throw new IOException("delete of a directory failed");
                }
                Path renamed = new Path(dir, "renamed.bin");
                if (!fs.rename(file, renamed)) {
                    throw new IOException("rename failed");
                }
                if (fs.listStatus(dir).length != 1 || !fs.exists(renamed)) {
                    throw new IOException("listing after rename is wrong");
                }
                if (!fs.delete(dir, true) || fs.exists(dir)) {
                    throw new IOException("delete failed");
                }
                protocol.println("SELFTEST OK " + data.length + " bytes in " + locs.length
                        + " blocks via datanode " + String.join(",", locs[0].getNames())
                        + " as user " + user);
                protocol.flush();
                return 0;
            }
        });
    }

    // ---------------------------------------------------------------- logging

    /** log4j (reload4j) at WARN to stderr, unless MINIDFS_LOG names another level. */
    private static void configureLogging() {
        String level = System.getenv().getOrDefault("MINIDFS_LOG", "WARN");
        Properties p = new Properties();
        p.setProperty("log4j.rootLogger", level + ", stderr");
        p.setProperty("log4j.appender.stderr", "org.apache.log4j.ConsoleAppender");
        p.setProperty("log4j.appender.stderr.target", "System.err");
        p.setProperty("log4j.appender.stderr.layout", "org.apache.log4j.PatternLayout");
        p.setProperty("log4j.appender.stderr.layout.ConversionPattern", "%d{ISO8601} %p %c{2}: %m%n");
        if (level.equals("WARN")) {
            // Expected on every start (no native libs, no metrics config): not worth a line.
            p.setProperty("log4j.logger.org.apache.hadoop.util.NativeCodeLoader", "ERROR");
            p.setProperty("log4j.logger.org.apache.hadoop.metrics2.impl.MetricsConfig", "ERROR");
            // No secret file for the (unused) HTTP auth filter; no CSRF filter; fresh volumes.
            p.setProperty("log4j.logger.org.apache.hadoop.security.authentication.server.AuthenticationFilter", "ERROR");
            p.setProperty("log4j.logger.org.apache.hadoop.hdfs.server.datanode.web.DatanodeHttpServer", "ERROR");
            p.setProperty("log4j.logger.org.apache.hadoop.hdfs.server.datanode.fsdataset.impl.FsDatasetImpl", "ERROR");
            p.setProperty("log4j.logger.org.apache.hadoop.hdfs.server.datanode.DirectoryScanner", "ERROR");
        }
        org.apache.log4j.LogManager.resetConfiguration();
        org.apache.log4j.PropertyConfigurator.configure(p);
        // java.util.logging (Jersey, Jetty bits) likewise; Jersey warns about Hadoop's
        // WebHDFS resource classes on first use.
        java.util.logging.Logger.getLogger("").setLevel(Level.WARNING);
        JERSEY_LOG.setLevel(Level.SEVERE);
    }

    private static void log(String msg) {
        System.err.println("minidfs: " + msg);
        System.err.flush();
    }
}
