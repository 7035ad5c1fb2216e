package dev.nbd.sample.support;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

import org.awaitility.Awaitility;
import org.awaitility.core.ConditionTimeoutException;

import dev.nbd.testsupport.FreePort;

/**
 * The packaged sample app ({@code target/sample-app-*.jar}) in its own JVM, so tests can kill
 * it with SIGKILL or SIGTERM. Ports are free ones, the disk export lives under {@code dataDir}.
 * Use from failsafe integration tests ({@code *IT}), which run after the jar is built.
 */
public final class SampleAppProcess implements AutoCloseable {

	private final Process process;

	/** Whether {@link #process} is a wrapper around the JVM rather than the JVM. */
	private final boolean wrapped;

	private final int nbdPort;

	private final int httpPort;

	private final Path log;

	private SampleAppProcess(Process process, boolean wrapped, int nbdPort, int httpPort, Path log) {
		this.process = process;
		this.wrapped = wrapped;
		this.nbdPort = nbdPort;
		this.httpPort = httpPort;
		this.log = log;
	}

	/** Path of the executable jar built by {@code mvn package}. */
	public static Path jar() {
		Path target = Path.of("target");
		try (var files = Files.list(target)) {
			return files.filter(p -> p.getFileName().toString().matches("sample-app-.*\\.jar"))
				.filter(p -> !p.getFileName().toString().endsWith("-plain.jar"))
				.findFirst()
				.orElseThrow(() -> new IllegalStateException("sample-app jar not built; run mvn package first"));
		}
		catch (IOException ex) {
			throw new UncheckedIOException(ex);
		}
	}

	/** Starts on free ports with the disk export at {@code dataDir/disk.img}, plus extra args. */
	public static SampleAppProcess start(Path dataDir, String... extraArgs) {
		return start(dataDir, FreePort.find(), extraArgs);
	}

	/** Starts on a given NBD port (to restart "the same server" after a kill). */
	public static SampleAppProcess start(Path dataDir, int nbdPort, String... extraArgs) {
		return start(dataDir, nbdPort, List.of(), extraArgs);
	}

	/**
	 * Starts with the {@code java} command prefixed by {@code wrapper}, e.g.
	 * {@code strace -f -o FILE}: the wrapper must run the JVM as its descendant and exit when it
	 * does. {@link #kill9()} and {@link #terminate(Duration)} signal the JVM itself, not the
	 * wrapper.
	 */
	public static SampleAppProcess startWrapped(Path dataDir, List<String> wrapper, String... extraArgs) {
		return start(dataDir, FreePort.find(), wrapper, List.of(), extraArgs);
	}

	/** Starts with JVM options before {@code -jar}, e.g. {@code -Xss256k} or {@code -Dspring.aot.enabled=true}. */
	public static SampleAppProcess startWithJvmOptions(Path dataDir, List<String> jvmOptions, String... extraArgs) {
		return start(dataDir, FreePort.find(), List.of(), jvmOptions, extraArgs);
	}

	/**
	 * Starts another Spring Boot jar (an app built by a test) on free ports, in {@code workDir},
	 * which also holds its log.
	 */
	public static SampleAppProcess startJar(Path jar, Path workDir, String... args) {
		int nbdPort = FreePort.find();
		int httpPort = FreePort.find();
		List<String> cmd = new ArrayList<>(List.of(Path.of(System.getProperty("java.home"), "bin", "java").toString(),
				"-Xmx512m", leakDetection(), "-jar", jar.toAbsolutePath().toString(), "--nbd.server.port=" + nbdPort,
				"--server.port=" + httpPort));
		cmd.addAll(List.of(args));
		return launch(cmd, workDir, workDir, false, nbdPort, httpPort);
	}

	private static String leakDetection() {
		return "-Dio.netty.leakDetection.level=" + System.getProperty("io.netty.leakDetection.level", "paranoid");
	}

	private static SampleAppProcess start(Path dataDir, int nbdPort, List<String> wrapper, String... extraArgs) {
		return start(dataDir, nbdPort, wrapper, List.of(), extraArgs);
	}

	private static SampleAppProcess start(Path dataDir, int nbdPort, List<String> wrapper, List<String> jvmOptions,
			String... extraArgs) {
		int httpPort = FreePort.find();
		List<String> cmd = new ArrayList<>(wrapper);
		cmd.add(Path.of(System.getProperty("java.home"), "bin", "java").toString());
		cmd.add("-Xmx512m");
		// The leak detection the tests run with (paranoid, from the build): close() fails on a leak.
		cmd.add(leakDetection());
		cmd.addAll(jvmOptions);
		cmd.addAll(List.of("-jar", jar().toAbsolutePath().toString(), "--nbd.server.port=" + nbdPort,
				"--server.port=" + httpPort, "--nbd.exports.disk.path=" + dataDir.resolve("disk.img").toAbsolutePath()));
		cmd.addAll(List.of(extraArgs));
		return launch(cmd, null, dataDir, !wrapper.isEmpty(), nbdPort, httpPort);
	}

	private static SampleAppProcess launch(List<String> cmd, Path workDir, Path logDir, boolean wrapped, int nbdPort,
			int httpPort) {
		try {
			Files.createDirectories(logDir);
			Path log = logDir.resolve("sample-app-" + nbdPort + "-" + System.nanoTime() + ".log");
			ProcessBuilder builder = new ProcessBuilder(cmd).redirectErrorStream(true).redirectOutput(log.toFile());
			if (workDir != null) {
				builder.directory(workDir.toFile());
			}
			SampleAppProcess app = new SampleAppProcess(builder.start(), wrapped, nbdPort, httpPort, log);
			// Generous: a loaded CI machine has taken over a minute to start the app.
			app.awaitPort(Duration.ofMinutes(3));
			return app;
		}
		catch (IOException ex) {
			throw new UncheckedIOException(ex);
		}
	}

	public int nbdPort() {
		return this.nbdPort;
	}

	public int httpPort() {
		return this.httpPort;
	}

	/** Process id of the JVM (not of a wrapper). */
	public long pid() {
		return jvm().pid();
	}

	public String uri(String export) {
		return "nbd://127.0.0.1:" + this.nbdPort + "/" + export;
	}

	public String log() {
		try {
			return Files.readString(this.log);
		}
		catch (IOException ex) {
			return "(no log: " + ex + ")";
		}
	}

	/** SIGKILL: no shutdown hooks, no flush; what is durable is what the kernel has. */
	public void kill9() {
		jvm().destroyForcibly();
		waitExit(Duration.ofSeconds(30));
	}

	/** SIGTERM: Spring's graceful shutdown. Returns the exit code. */
	public int terminate(Duration timeout) {
		jvm().destroy();
		return waitExit(timeout);
	}

	/** SIGTERM without waiting; the future completes with the exit code. */
	public java.util.concurrent.CompletableFuture<Integer> terminateAsync(Duration timeout) {
		jvm().destroy();
		return java.util.concurrent.CompletableFuture.supplyAsync(() -> waitExit(timeout));
	}

	/** The JVM: the process itself, or the wrapper's descendant running java. */
	private ProcessHandle jvm() {
		if (!this.wrapped) {
			return this.process.toHandle();
		}
		return this.process.descendants()
			.filter(h -> h.info().command().map(c -> c.endsWith("/java")).orElse(false))
			.findFirst()
			.orElseThrow(() -> new IllegalStateException("no java process under the wrapper"));
	}

	private int waitExit(Duration timeout) {
		try {
			if (!this.process.waitFor(timeout.toMillis(), TimeUnit.MILLISECONDS)) {
				destroyAll();
				this.process.waitFor(10, TimeUnit.SECONDS);
				throw new AssertionError("sample app did not exit within " + timeout + "\n" + log());
			}
			return this.process.exitValue();
		}
		catch (InterruptedException ex) {
			Thread.currentThread().interrupt();
			throw new AssertionError(ex);
		}
	}

	private void awaitPort(Duration timeout) {
		try {
			Awaitility.await().atMost(timeout).pollInterval(Duration.ofMillis(100)).until(() -> {
				if (!this.process.isAlive()) {
					throw new AssertionError("sample app exited early:\n" + log());
				}
				try (Socket s = new Socket()) {
					s.connect(new InetSocketAddress("127.0.0.1", this.nbdPort), 1000);
					return true;
				}
				catch (IOException ex) {
					return false;
				}
			});
		}
		catch (ConditionTimeoutException ex) {
			destroyAll();
			throw new AssertionError("sample app did not listen on " + this.nbdPort + " within " + timeout + "\n" + log());
		}
	}

	/** Stops the app if it still runs; fails if it reported a leaked buffer meanwhile. */
	@Override
	public void close() {
		if (this.process.isAlive()) {
			destroyAll();
			waitExit(Duration.ofSeconds(30));
		}
		String log = log();
		if (log.contains("LEAK:")) {
			throw new AssertionError("the sample app reported a leaked buffer (" + this.log + "):\n" + log);
		}
	}

	/** SIGKILL to the JVM and any wrapper around it. */
	private void destroyAll() {
		this.process.descendants().forEach(ProcessHandle::destroyForcibly);
		this.process.destroyForcibly();
	}

}
