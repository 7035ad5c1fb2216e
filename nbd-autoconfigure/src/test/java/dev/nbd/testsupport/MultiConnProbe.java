package dev.nbd.testsupport;

import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;

/**
 * Runs {@code testsupport/multiconn-visibility.py} (libnbd's Python module under the system
 * python3): several connections to one export; write on one, flush on another, read on a
 * third; many aio writers in flight; FUA visible everywhere. Output ends with "ok" on success.
 */
public final class MultiConnProbe {

	private MultiConnProbe() {
	}

	/**
	 * Runs the probe with {@code connections} handles, using 64 KiB blocks from {@code baseOffset}
	 * (pick a different base per run on a persistent export).
	 */
	public static Processes.Result run(String uri, int connections, long baseOffset, boolean checkFlag) {
		List<String> args = new ArrayList<>(List.of(uri, Integer.toString(connections), Long.toString(baseOffset)));
		if (!checkFlag) {
			args.add("--no-flag-check");
		}
		return Libnbd.python(Duration.ofSeconds(120), script(), args.toArray(String[]::new));
	}

	private static String script() {
		try (InputStream in = MultiConnProbe.class.getResourceAsStream("/testsupport/multiconn-visibility.py")) {
			if (in == null) {
				throw new IllegalStateException("testsupport/multiconn-visibility.py not on the classpath");
			}
			return new String(in.readAllBytes(), StandardCharsets.UTF_8);
		}
		catch (IOException ex) {
			throw new UncheckedIOException(ex);
		}
	}

}
