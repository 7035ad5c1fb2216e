package dev.nbd.sample.consumer;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;

import org.springframework.boot.SpringBootVersion;

import dev.nbd.testsupport.Processes;

/**
 * A new application on the Spring Boot parent, as a user would create it, built by a nested
 * Maven run against this build's artifacts. The nested run gets its own local repository
 * ({@code target/consumer-repo}, never the shared one) holding the reactor's jars and poms; every
 * other artifact is copied from the build's local repository, read as a {@code file:} remote,
 * and anything missing there comes from Maven Central as usual.
 */
final class ConsumerProject {

	/** The modules a consumer can depend on, with the parent they inherit from. */
	private static final List<String> MODULES = List.of("nbd-autoconfigure", "nbd-spring-boot-starter",
			"nbd-backend-test-kit");

	private final Path dir;

	private ConsumerProject(Path dir) {
		this.dir = dir;
	}

	/** A project in {@code target/consumer/NAME} (emptied) with {@code dependencies} as its pom's. */
	static ConsumerProject create(String name, String dependencies) throws IOException {
		Path dir = sampleAppDir().resolve("target/consumer").resolve(name);
		if (Files.exists(dir)) {
			try (var walk = Files.walk(dir)) {
				for (Path p : walk.sorted(java.util.Comparator.reverseOrder()).toList()) {
					Files.delete(p);
				}
			}
		}
		Files.createDirectories(dir);
		String pom = """
				<?xml version="1.0" encoding="UTF-8"?>
				<project xmlns="http://maven.apache.org/POM/4.0.0">
				  <modelVersion>4.0.0</modelVersion>
				  <parent>
				    <groupId>org.springframework.boot</groupId>
				    <artifactId>spring-boot-starter-parent</artifactId>
				    <version>%s</version>
				    <relativePath/>
				  </parent>
				  <groupId>com.example</groupId>
				  <artifactId>%s</artifactId>
				  <version>1.0</version>
				  <properties>
				    <java.version>17</java.version>
				  </properties>
				  <dependencies>
				%s
				  </dependencies>
				  <build>
				    <plugins>
				      <plugin>
				        <groupId>org.springframework.boot</groupId>
				        <artifactId>spring-boot-maven-plugin</artifactId>
				      </plugin>
				    </plugins>
				  </build>
				</project>
				""".formatted(SpringBootVersion.getVersion(), name, dependencies);
		Files.writeString(dir.resolve("pom.xml"), pom);
		return new ConsumerProject(dir);
	}

	Path dir() {
		return this.dir;
	}

	/** Writes a source or resource file, e.g. {@code src/main/resources/application.properties}. */
	ConsumerProject file(String path, String content) throws IOException {
		Path file = this.dir.resolve(path);
		Files.createDirectories(file.getParent());
		Files.writeString(file, content);
		return this;
	}

	/** {@code mvn package}, running the project's tests; returns the executable jar. */
	Path packageJar() throws IOException {
		Path repository = sampleAppDir().resolve("target/consumer-repo");
		installReactorArtifacts(repository);
		Path settings = this.dir.resolve("settings.xml");
		Files.writeString(settings, settings(repository, Path.of(System.getProperty("nbd.sharedRepository"))));
		Path mvn = Path.of(System.getProperty("maven.home"), "bin", "mvn");
		List<String> command = new ArrayList<>(List.of(mvn.toString(), "-B", "-q", "-s", settings.toString(), "-f",
				this.dir.resolve("pom.xml").toString(), "package",
				"-Dnbd.testkit.libnbd=" + System.getProperty("nbd.testkit.libnbd", "auto")));
		Processes.Result result = Processes.run(Duration.ofMinutes(10), this.dir, null, command);
		result.assertSuccess();
		try (var files = Files.list(this.dir.resolve("target"))) {
			return files.filter((p) -> p.toString().endsWith(".jar")).findFirst().orElseThrow();
		}
	}

	/** Copies this build's jars and poms into {@code repository}, as {@code mvn install} would. */
	private static void installReactorArtifacts(Path repository) throws IOException {
		String version = System.getProperty("nbd.projectVersion");
		Path root = sampleAppDir().getParent();
		install(repository, "nbd-parent", version, root.resolve("pom.xml"), null);
		for (String module : MODULES) {
			Path jar = root.resolve(module).resolve("target").resolve(module + "-" + version + ".jar");
			if (!Files.exists(jar)) {
				throw new IllegalStateException(jar + " is not built: run the reactor (mvn verify, or -am)");
			}
			install(repository, module, version, root.resolve(module).resolve("pom.xml"), jar);
		}
	}

	private static void install(Path repository, String artifactId, String version, Path pom, Path jar)
			throws IOException {
		Path dir = repository.resolve("dev/nbd").resolve(artifactId).resolve(version);
		Files.createDirectories(dir);
		Files.copy(pom, dir.resolve(artifactId + "-" + version + ".pom"), StandardCopyOption.REPLACE_EXISTING);
		if (jar != null) {
			Files.copy(jar, dir.resolve(artifactId + "-" + version + ".jar"), StandardCopyOption.REPLACE_EXISTING);
		}
	}

	private static String settings(Path repository, Path shared) {
		String remote = """
				<id>build-repository</id>
				<url>%s</url>
				<releases><enabled>true</enabled></releases>
				<snapshots><enabled>false</enabled></snapshots>
				""".formatted(shared.toUri());
		return """
				<settings>
				  <localRepository>%s</localRepository>
				  <profiles>
				    <profile>
				      <id>build-repository</id>
				      <repositories><repository>%s</repository></repositories>
				      <pluginRepositories><pluginRepository>%s</pluginRepository></pluginRepositories>
				    </profile>
				  </profiles>
				  <activeProfiles><activeProfile>build-repository</activeProfile></activeProfiles>
				</settings>
				""".formatted(repository, remote, remote);
	}

	static Path sampleAppDir() {
		return Path.of(System.getProperty("basedir", ".")).toAbsolutePath();
	}

}
