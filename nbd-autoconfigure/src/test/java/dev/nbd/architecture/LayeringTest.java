package dev.nbd.architecture;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Stream;

import org.junit.jupiter.api.Test;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * Keeps the layers visible: only the Spring glue imports Spring; the wire protocol does no I/O
 * and knows nothing of the server; backends know the protocol's error values only.
 */
class LayeringTest {

	private static final Path MAIN = Path.of("src/main/java/dev/nbd");

	private static final Pattern IMPORT = Pattern.compile("^import (static )?([\\w.]+)", Pattern.MULTILINE);

	@Test
	void onlyTheGlueImportsSpring() throws IOException {
		assertThat(violations(List.of("protocol", "server", "backend"), "org.springframework")).isEmpty();
	}

	@Test
	void protocolIsAPureCodec() throws IOException {
		assertThat(violations(List.of("protocol"), "dev.nbd.server", "dev.nbd.backend", "dev.nbd.autoconfigure",
				"java.net", "java.nio.channels", "java.io.File", "io.netty.channel.socket", "io.netty.bootstrap"))
			.isEmpty();
	}

	@Test
	void backendsDoNotDependOnTheServerOrNetty() throws IOException {
		assertThat(violations(List.of("backend"), "dev.nbd.server", "dev.nbd.autoconfigure", "io.netty")).isEmpty();
	}

	@Test
	void serverDoesNotDependOnTheGlue() throws IOException {
		assertThat(violations(List.of("server"), "dev.nbd.autoconfigure")).isEmpty();
	}

	private static List<String> violations(List<String> packages, String... forbidden) throws IOException {
		List<String> found = new ArrayList<>();
		for (String pkg : packages) {
			Path dir = MAIN.resolve(pkg);
			assertThat(dir).isDirectory();
			try (Stream<Path> files = Files.walk(dir)) {
				for (Path file : files.filter(p -> p.toString().endsWith(".java")).toList()) {
					Matcher m = IMPORT.matcher(Files.readString(file));
					while (m.find()) {
						String imported = m.group(2);
						for (String f : forbidden) {
							if (imported.startsWith(f)) {
								found.add(file + " imports " + imported);
							}
						}
					}
				}
			}
		}
		return found;
	}

}
