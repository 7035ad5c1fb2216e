package dev.nbd.sample.helm;

import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Stream;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import dev.nbd.sample.support.SampleAppProcess;
import dev.nbd.testsupport.Processes;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * No Docker engine here, so the Dockerfile's steps are replayed on the packaged jar: the same
 * extract command, the layers copied in the Dockerfile's order into one read-only directory,
 * and the ENTRYPOINT started from there.
 */
class DockerfileIT {

	private static final Path DOCKERFILE = Path.of("Dockerfile");

	@TempDir
	Path tmp;

	@Test
	void layersMatchTheJarAndTheEntrypointStartsTheApp() throws Exception {
		String dockerfile = Files.readString(DOCKERFILE);
		String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
		Path jar = SampleAppProcess.jar().toAbsolutePath();

		// COPY lines name every layer the jar declares, least-changing first.
		List<String> copied = new ArrayList<>();
		Matcher copy = Pattern.compile("(?m)^COPY --from=builder /builder/extracted/([\\w-]+)/ \\./$").matcher(dockerfile);
		while (copy.find()) {
			copied.add(copy.group(1));
		}
		String layers = Processes.run(Duration.ofSeconds(60), java, "-Djarmode=tools", "-jar", jar.toString(),
				"list-layers")
			.assertSuccess()
			.stdout();
		assertThat(copied).containsExactlyElementsOf(layers.lines().map(String::strip).filter((l) -> !l.isEmpty()).toList());

		// RUN java -Djarmode=tools -jar application.jar extract ... --destination extracted
		Matcher run = Pattern.compile("(?m)^RUN java (-Djarmode=tools -jar application\\.jar extract .*)$").matcher(dockerfile);
		assertThat(run.find()).as("extract step in the Dockerfile").isTrue();
		Path builder = Files.createDirectories(this.tmp.resolve("builder"));
		Files.copy(jar, builder.resolve("application.jar"));
		List<String> extract = new ArrayList<>(List.of(java));
		extract.addAll(Arrays.asList(run.group(1).split(" ")));
		Processes.run(Duration.ofSeconds(120), builder, null, extract).assertSuccess();

		Path application = Files.createDirectories(this.tmp.resolve("application"));
		for (String layer : copied) {
			copyInto(builder.resolve("extracted").resolve(layer), application);
		}
		makeReadOnly(application);
		// Root ignores file permissions: run as an unprivileged user (the image's USER is not root
		// either), and check that the directory really is read-only for it.
		Path writable = Files.createDirectories(this.tmp.resolve("writable"));
		Files.setPosixFilePermissions(this.tmp, PosixFilePermissions.fromString("rwxr-xr-x"));
		Files.setPosixFilePermissions(writable, PosixFilePermissions.fromString("rwxrwxrwx"));
		Processes.Result probe = Processes.run(Duration.ofSeconds(30), application, null,
				unprivileged(List.of("sh", "-c", "touch probe")));
		assertThat(probe.exitCode()).as("the app's user cannot write next to the app").isNotZero();

		// ENTRYPOINT ["java", "org.springframework.boot.loader.launch.JarLauncher"], run without
		// web server and listener so it starts, logs and exits (the readiness group names the
		// listener's health indicator, which stays, UP, when the listener is disabled).
		Matcher entrypoint = Pattern.compile("(?m)^ENTRYPOINT \\[\"java\", \"([\\w.]+)\"\\]$").matcher(dockerfile);
		assertThat(entrypoint.find()).as("exec-form ENTRYPOINT").isTrue();
		Processes.Result started = Processes.run(Duration.ofSeconds(120), application, null,
				unprivileged(List.of(java, "-Djava.io.tmpdir=" + writable, entrypoint.group(1),
						"--spring.main.web-application-type=none", "--nbd.server.enabled=false",
						"--nbd.exports.disk.path=" + writable.resolve("disk.img"))));
		started.assertSuccess();
		assertThat(started.stdout()).contains("Started SampleApplication");
	}

	private static void copyInto(Path from, Path to) throws Exception {
		try (Stream<Path> paths = Files.walk(from)) {
			for (Path p : paths.sorted().toList()) {
				Path target = to.resolve(from.relativize(p).toString());
				if (Files.isDirectory(p)) {
					Files.createDirectories(target);
				}
				else {
					Files.copy(p, target);
				}
			}
		}
	}

	/** {@code command} run as user and group 65534 (nobody) when this JVM runs as root. */
	private static List<String> unprivileged(List<String> command) {
		if (!"root".equals(System.getProperty("user.name"))) {
			return command;
		}
		List<String> wrapped = new ArrayList<>(List.of("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"));
		wrapped.addAll(command);
		return wrapped;
	}

	/** The chart mounts the root filesystem read-only: the app must not write next to itself. */
	private static void makeReadOnly(Path dir) throws Exception {
		try (Stream<Path> paths = Files.walk(dir)) {
			for (Path p : paths.toList()) {
				p.toFile().setWritable(false, false);
			}
		}
	}

}
