package dev.nbd.sample.consumer;

import java.io.IOException;
import java.net.http.HttpResponse;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.jar.JarFile;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import io.netty.util.Version;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import tools.jackson.databind.JsonNode;

import dev.nbd.sample.support.SampleAppProcess;
import dev.nbd.testsupport.ActuatorClient;
import dev.nbd.testsupport.ExternalTool;
import dev.nbd.testsupport.Processes;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * A new Spring Boot application made of the README's own snippets (quick start dependencies,
 * properties and bean; the example backend; the test kit's dependency and test), on the Spring
 * Boot parent, built with Maven against this build's artifacts: it compiles, its backend passes
 * the test kit, it ships the Netty version this project is tested with, and once started the
 * README's commands get the answers it promises.
 */
class QuickStartAppIT {

	private static final String PACKAGE = "package com.example.demo;\n\n";

	private static Path project;

	private static Path jar;


	@BeforeAll
	static void buildAppFromReadme() throws IOException {
		String readme = Files.readString(ConsumerProject.sampleAppDir().getParent().resolve("README.md"));
		ConsumerProject app = ConsumerProject.create("quick-start", snippet(readme, "quick-start-dependencies")
				+ snippet(readme, "test-kit-dependency") + """
						<dependency>
						  <groupId>org.springframework.boot</groupId>
						  <artifactId>spring-boot-starter-test</artifactId>
						  <scope>test</scope>
						</dependency>
						""");
		app.file("src/main/java/com/example/demo/DemoApplication.java", PACKAGE + """
				import org.springframework.boot.SpringApplication;
				import org.springframework.boot.autoconfigure.SpringBootApplication;

				@SpringBootApplication
				public class DemoApplication {

					public static void main(String[] args) {
						SpringApplication.run(DemoApplication.class, args);
					}

				}
				""")
			.file("src/main/java/com/example/demo/NbdExports.java", PACKAGE + snippet(readme, "quick-start-backend"))
			.file("src/main/java/com/example/demo/ArrayBackend.java", PACKAGE + snippet(readme, "backend-example"))
			.file("src/test/java/com/example/demo/ArrayBackendContractTests.java",
					PACKAGE + snippet(readme, "test-kit-test"))
			.file("src/main/resources/application.properties", snippet(readme, "quick-start-properties"));
		project = app.dir();
		jar = app.packageJar();
	}

	@Test
	void readmeBackendPassesTheTestKit() throws IOException {
		String report = Files.readString(
				project.resolve("target/surefire-reports/TEST-com.example.demo.ArrayBackendContractTests.xml"));
		assertThat(report).contains("failures=\"0\"", "errors=\"0\"", "readFillsTheBuffer", "concurrentViews",
				"servedThroughLibnbd");
	}

	@Test
	void appShipsTheNettyVersionThisProjectIsTestedWith() throws IOException {
		String tested = Version.identify().get("netty-common").artifactVersion();
		Pattern nettyJar = Pattern.compile("BOOT-INF/lib/(netty-[a-z0-9-]+?)-(\\d+\\.\\d+\\.\\d+\\.Final)(-[a-z0-9_-]+)?\\.jar");
		try (JarFile boot = new JarFile(jar.toFile())) {
			List<String> versions = boot.stream()
				.map((entry) -> nettyJar.matcher(entry.getName()))
				.filter(Matcher::matches)
				.map((m) -> m.group(1) + ":" + m.group(2))
				.toList();
			assertThat(versions).as("Netty jars in the app").isNotEmpty().allMatch((v) -> v.endsWith(":" + tested));
		}
	}

	@Test
	void readmeCommandsGetTheAnswersItPromises() throws Exception {
		try (SampleAppProcess app = SampleAppProcess.startJar(jar, project)) {
			JsonNode nbd = getJson(app, "/actuator/nbd");
			assertThat(nbd.get("exports").findValuesAsString("name")).containsExactlyInAnyOrder("scratch", "disk", "cache");
			JsonNode health = getJson(app, "/actuator/health");
			assertThat(health.get("components").get("nbd").get("status").asString()).isEqualTo("UP");
			assertThat(health.get("components").get("nbd").get("details").get("port").asInt()).isEqualTo(app.nbdPort());
			assertThat(getJson(app, "/actuator/health/readiness").get("status").asString()).isEqualTo("UP");
			assertThat(get(app, "/actuator/prometheus").body()).contains("nbd_connections");
			ExternalTool.require("nbdinfo");
			String list = Processes.run(Duration.ofSeconds(60), "nbdinfo", "--list", "nbd://127.0.0.1:" + app.nbdPort())
				.assertSuccess()
				.stdout();
			assertThat(list).contains("export=\"scratch\"", "export=\"disk\"", "export=\"cache\"");
			assertThat(project.resolve("disk.img")).exists();
		}
	}

	/** The fenced block after {@code <!-- snippet:NAME -->}. */
	static String snippet(String readme, String name) {
		String marker = "<!-- snippet:" + name + " -->";
		int at = readme.indexOf(marker);
		assertThat(at).as("README marker " + marker).isNotNegative();
		int fence = readme.indexOf("```", at);
		int body = readme.indexOf('\n', fence) + 1;
		int end = readme.indexOf("\n```", body);
		return readme.substring(body, end + 1);
	}

	private JsonNode getJson(SampleAppProcess app, String path) {
		return new ActuatorClient(app.httpPort()).getJson(path);
	}

	private HttpResponse<String> get(SampleAppProcess app, String path) {
		return new ActuatorClient(app.httpPort()).get(path);
	}

}
