package dev.nbd.testkit;

import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.fail;
import static org.junit.jupiter.api.Assumptions.abort;

/**
 * libnbd's Python binding, found with {@code nbdsh} (whose python3 runs the contract
 * script). Missing: the test is skipped, or fails when {@code nbd.testkit.libnbd=required}.
 */
final class Libnbd {

	static final String REQUIRED_PROPERTY = "nbd.testkit.libnbd";

	private final String python;

	private Libnbd(String python) {
		this.python = python;
	}

	/** Whether libnbd's Python binding can be used here. */
	static boolean available() {
		try {
			return python() != null;
		}
		catch (IOException ex) {
			return false;
		}
		catch (InterruptedException ex) {
			Thread.currentThread().interrupt();
			return false;
		}
	}

	static Libnbd find() throws IOException, InterruptedException {
		String python = python();
		if (python == null) {
			String message = "libnbd's nbdsh is not installed (Debian/Ubuntu: libnbd-bin python3-libnbd; Fedora: libnbd)";
			if ("required".equalsIgnoreCase(System.getProperty(REQUIRED_PROPERTY))) {
				fail(message + ", and " + REQUIRED_PROPERTY + "=required");
			}
			abort(message);
		}
		return new Libnbd(python);
	}

	/**
	 * A Python with libnbd's binding: nbdsh runs {@code python3 -m nbd}, so the python3 installed
	 * beside it first (a python3 earlier on PATH, from pyenv or a venv, usually lacks it).
	 */
	private static String python() throws IOException, InterruptedException {
		Path nbdsh = onPath("nbdsh");
		if (nbdsh == null) {
			return null;
		}
		List<String> candidates = new ArrayList<>();
		candidates.add(nbdsh.resolveSibling("python3").toString());
		Path onPath = onPath("python3");
		if (onPath != null) {
			candidates.add(onPath.toString());
		}
		for (String python : candidates) {
			if (Files.isExecutable(Path.of(python)) && runs(python, "import nbd")) {
				return python;
			}
		}
		return null;
	}

	/** Runs the contract script against {@code uri}; it prints "ok" when every check held. */
	void runContractScript(String uri, long size, boolean multiConn) throws IOException, InterruptedException {
		Path script = Files.createTempFile("nbd-backend-contract", ".py");
		try (InputStream in = Libnbd.class.getResourceAsStream("backend-contract.py")) {
			Files.write(script, in.readAllBytes());
			Result result = run(List.of(this.python, script.toString(), uri, Long.toString(size),
					Boolean.toString(multiConn)), 240);
			if (result.exitCode != 0 || !result.output.strip().endsWith("ok")) {
				fail("libnbd against the served backend (" + uri + ") failed, exit " + result.exitCode + ":\n"
						+ result.output);
			}
			assertEquals(0, result.exitCode);
		}
		finally {
			Files.deleteIfExists(script);
		}
	}

	private static Path onPath(String name) {
		List<String> dirs = new ArrayList<>(List.of(System.getenv().getOrDefault("PATH", "").split(":")));
		dirs.add("/usr/bin");
		for (String dir : dirs) {
			if (!dir.isEmpty() && Files.isExecutable(Path.of(dir, name))) {
				return Path.of(dir, name);
			}
		}
		return null;
	}

	private static boolean runs(String python, String code) throws IOException, InterruptedException {
		try {
			return run(List.of(python, "-c", code), 30).exitCode == 0;
		}
		catch (IOException ex) {
			return false;
		}
	}

	private static Result run(List<String> command, int timeoutSeconds) throws IOException, InterruptedException {
		Process process = new ProcessBuilder(command).redirectErrorStream(true).start();
		process.getOutputStream().close();
		byte[][] output = new byte[1][];
		Thread reader = new Thread(() -> {
			try {
				output[0] = process.getInputStream().readAllBytes();
			}
			catch (IOException ex) {
				output[0] = ex.toString().getBytes(StandardCharsets.UTF_8);
			}
		}, "libnbd-output");
		reader.start();
		if (!process.waitFor(timeoutSeconds, TimeUnit.SECONDS)) {
			process.destroyForcibly();
			reader.join(5000);
			fail(String.join(" ", command) + " did not finish in " + timeoutSeconds + " s");
		}
		reader.join(5000);
		return new Result(process.exitValue(), new String(output[0] == null ? new byte[0] : output[0], StandardCharsets.UTF_8));
	}

	private record Result(int exitCode, String output) {
	}

}
