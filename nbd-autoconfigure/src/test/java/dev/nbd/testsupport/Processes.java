package dev.nbd.testsupport;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;

/** Runs external commands with a timeout, capturing output. */
public final class Processes {

	private Processes() {
	}

	/** Output of a finished command. */
	public record Result(int exitCode, String stdout, String stderr) {

		public Result assertSuccess() {
			if (this.exitCode != 0) {
				throw new AssertionError("exit code " + this.exitCode + "\nstdout:\n" + this.stdout + "\nstderr:\n"
						+ this.stderr);
			}
			return this;
		}

	}

	/**
	 * Environment every peer runs with: Debian's /usr/bin first on PATH, so {@code nbdsh} finds
	 * the system python3 that has the {@code nbd} module (a pyenv python3 first on PATH makes it
	 * die with a SyntaxError).
	 */
	public static ProcessBuilder builder(List<String> command) {
		ProcessBuilder pb = new ProcessBuilder(command);
		Map<String, String> env = pb.environment();
		env.put("PATH", "/usr/bin:/bin:/usr/sbin:/sbin:" + env.getOrDefault("PATH", ""));
		env.remove("PYTHONPATH");
		env.remove("PYTHONHOME");
		env.put("LIBNBD_DEBUG", "0");
		return pb;
	}

	public static Result run(Duration timeout, String... command) {
		return run(timeout, null, null, List.of(command));
	}

	public static Result run(Duration timeout, Path workDir, byte[] stdin, List<String> command) {
		ProcessBuilder pb = builder(new ArrayList<>(command));
		if (workDir != null) {
			pb.directory(workDir.toFile());
		}
		try {
			Process p = pb.start();
			ByteArrayOutputStream out = new ByteArrayOutputStream();
			ByteArrayOutputStream err = new ByteArrayOutputStream();
			Thread to = pump(p.getInputStream(), out);
			Thread te = pump(p.getErrorStream(), err);
			if (stdin != null) {
				p.getOutputStream().write(stdin);
			}
			p.getOutputStream().close();
			if (!p.waitFor(timeout.toMillis(), TimeUnit.MILLISECONDS)) {
				p.descendants().forEach(ProcessHandle::destroyForcibly);
				p.destroyForcibly();
				p.waitFor(5, TimeUnit.SECONDS);
				throw new AssertionError("timed out after " + timeout + ": " + command + "\nstdout:\n"
						+ out.toString(StandardCharsets.UTF_8) + "\nstderr:\n" + err.toString(StandardCharsets.UTF_8));
			}
			to.join(5000);
			te.join(5000);
			return new Result(p.exitValue(), out.toString(StandardCharsets.UTF_8), err.toString(StandardCharsets.UTF_8));
		}
		catch (IOException ex) {
			throw new UncheckedIOException(ex);
		}
		catch (InterruptedException ex) {
			Thread.currentThread().interrupt();
			throw new AssertionError("interrupted", ex);
		}
	}

	private static Thread pump(InputStream in, ByteArrayOutputStream out) {
		Thread t = new Thread(() -> {
			try {
				in.transferTo(out);
			}
			catch (IOException ex) {
				// Process ended.
			}
		});
		t.setDaemon(true);
		t.start();
		return t;
	}

}
