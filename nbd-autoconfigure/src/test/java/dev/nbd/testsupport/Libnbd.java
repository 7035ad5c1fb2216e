package dev.nbd.testsupport;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;

/**
 * libnbd clients from Debian ({@code libnbd-bin}, {@code python3-libnbd}), the one way tests run
 * them: Python scripts under the system python3 with {@code nbd} importable, and {@code nbdsh}.
 * Skips on a developer machine without them, fails on CI ({@link ExternalTool}).
 */
public final class Libnbd {

	private static final String PYTHON = "/usr/bin/python3";

	private static volatile boolean checked;

	private Libnbd() {
	}

	/** Skips (fails on CI) unless nbdsh is installed and /usr/bin/python3 can import nbd. */
	public static void require() {
		if (checked) {
			return;
		}
		ExternalTool.require("nbdsh");
		boolean importable = Processes.run(Duration.ofSeconds(30), PYTHON, "-c", "import nbd").exitCode() == 0;
		ExternalTool.requireThat(importable, "python3-libnbd is not installed (import nbd failed)");
		checked = true;
	}

	/** Runs a Python {@code script} (which imports {@code nbd} itself) with {@code args} as {@code sys.argv[1:]}. */
	public static Processes.Result python(Duration timeout, String script, String... args) {
		require();
		return Processes.run(timeout, null, null, pythonCommand(script, args));
	}

	/** Starts a Python {@code script} as {@link #python} does, without waiting; stderr merged into stdout. */
	public static Process startPython(String script, String... args) {
		require();
		return start(pythonCommand(script, args));
	}

	/**
	 * Runs {@code nbdsh [options] -u uri -c script}: the script finds handle {@code h} connected
	 * to {@code uri} ({@code uri} null: not connected).
	 */
	public static Processes.Result nbdsh(Duration timeout, String uri, String script, String... options) {
		require();
		return Processes.run(timeout, null, null, nbdshCommand(uri, script, options));
	}

	/** Starts nbdsh as {@link #nbdsh} does, without waiting; stderr merged into stdout. */
	public static Process startNbdsh(String uri, String script, String... options) {
		require();
		return start(nbdshCommand(uri, script, options));
	}

	/**
	 * Waits until a started client prints the line {@code marker} (e.g. {@code ready}: it did its
	 * work and stays connected), or fails with what it printed instead.
	 */
	public static void awaitLine(Process client, String marker, Duration timeout) {
		BufferedReader out = new BufferedReader(new InputStreamReader(client.getInputStream(), StandardCharsets.UTF_8));
		CompletableFuture<String> seen = CompletableFuture.supplyAsync(() -> {
			StringBuilder lines = new StringBuilder();
			try {
				for (String line = out.readLine(); line != null; line = out.readLine()) {
					if (line.equals(marker)) {
						return null;
					}
					lines.append(line).append('\n');
				}
			}
			catch (IOException ex) {
				lines.append(ex);
			}
			return lines.toString();
		});
		try {
			String failure = seen.get(timeout.toMillis(), TimeUnit.MILLISECONDS);
			if (failure != null) {
				throw new AssertionError("libnbd client ended before printing '" + marker + "':\n" + failure);
			}
		}
		catch (ExecutionException | TimeoutException ex) {
			client.destroyForcibly();
			throw new AssertionError("libnbd client did not print '" + marker + "' within " + timeout, ex);
		}
		catch (InterruptedException ex) {
			Thread.currentThread().interrupt();
			throw new AssertionError(ex);
		}
	}

	/** Stops started clients (SIGKILL) and waits for them to go. */
	public static void stop(List<Process> clients) {
		for (Process p : clients) {
			p.destroyForcibly();
			try {
				p.waitFor(10, TimeUnit.SECONDS);
			}
			catch (InterruptedException ex) {
				Thread.currentThread().interrupt();
			}
		}
	}

	private static List<String> pythonCommand(String script, String... args) {
		List<String> command = new ArrayList<>(List.of(PYTHON, "-c", script));
		command.addAll(List.of(args));
		return command;
	}

	private static List<String> nbdshCommand(String uri, String script, String... options) {
		List<String> command = new ArrayList<>(List.of("nbdsh"));
		command.addAll(List.of(options));
		if (uri != null) {
			command.addAll(List.of("-u", uri));
		}
		command.addAll(List.of("-c", script));
		return command;
	}

	private static Process start(List<String> command) {
		try {
			return Processes.builder(command).redirectErrorStream(true).start();
		}
		catch (IOException ex) {
			throw new UncheckedIOException(ex);
		}
	}

}
