package dev.nbd.testsupport;

import java.io.File;
import java.nio.file.Files;
import java.nio.file.Path;

import org.junit.jupiter.api.Assertions;
import org.junit.jupiter.api.Assumptions;

/**
 * Real peers (nbdinfo, nbdsh, qemu-img, ...) from Debian packages. On a developer machine a
 * missing tool skips the test; with {@code CI=true} it fails it, so CI never passes by skipping.
 */
public final class ExternalTool {

	private ExternalTool() {
	}

	public static boolean inCi() {
		return "true".equalsIgnoreCase(System.getenv("CI"));
	}

	/** Absolute path of {@code name} on PATH (or /usr/sbin, /sbin), or skip/fail. */
	public static Path require(String name) {
		Path found = find(name);
		if (found == null) {
			String msg = name + " is not installed (install the Debian package; .ci/run does)";
			if (inCi()) {
				Assertions.fail(msg);
			}
			Assumptions.abort(msg);
		}
		return found;
	}

	public static Path find(String name) {
		String path = System.getenv().getOrDefault("PATH", "") + File.pathSeparator + "/usr/sbin:/sbin:/usr/bin";
		for (String dir : path.split(File.pathSeparator)) {
			if (dir.isEmpty()) {
				continue;
			}
			Path p = Path.of(dir, name);
			if (Files.isExecutable(p)) {
				return p;
			}
		}
		return null;
	}

	/** Skip (or fail in CI) unless {@code condition} holds, e.g. a Python module is importable. */
	public static void requireThat(boolean condition, String what) {
		if (!condition) {
			if (inCi()) {
				Assertions.fail(what);
			}
			Assumptions.abort(what);
		}
	}

}
