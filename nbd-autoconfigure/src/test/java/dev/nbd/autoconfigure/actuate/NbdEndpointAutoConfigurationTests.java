package dev.nbd.autoconfigure.actuate;

import java.nio.file.Path;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.springframework.boot.actuate.endpoint.annotation.Endpoint;
import org.springframework.boot.autoconfigure.AutoConfigurations;
import org.springframework.boot.autoconfigure.ssl.SslAutoConfiguration;
import org.springframework.boot.test.context.FilteredClassLoader;
import org.springframework.boot.test.context.runner.ApplicationContextRunner;

import dev.nbd.autoconfigure.NbdServerAutoConfiguration;

import static org.assertj.core.api.Assertions.assertThat;

class NbdEndpointAutoConfigurationTests {

	private final ApplicationContextRunner runner = new ApplicationContextRunner()
		.withConfiguration(AutoConfigurations.of(NbdServerAutoConfiguration.class, SslAutoConfiguration.class,
				NbdEndpointAutoConfiguration.class))
		.withPropertyValues("nbd.server.port=0", "nbd.exports.mem.type=memory", "nbd.exports.mem.size=1MB");

	@Test
	void endpointWhenExposed() {
		this.runner.withPropertyValues("management.endpoints.web.exposure.include=nbd").run((context) -> {
			assertThat(context).hasSingleBean(NbdEndpoint.class);
			NbdEndpoint.NbdDescriptor nbd = context.getBean(NbdEndpoint.class).nbd();
			assertThat(nbd.exports()).singleElement().satisfies((e) -> {
				assertThat(e.name()).isEqualTo("mem");
				assertThat(e.size()).isEqualTo(1024 * 1024);
				assertThat(e.flush().count()).isZero();
			});
			assertThat(nbd.connections()).isEmpty();
			assertThat(context.getBean(NbdEndpoint.class).export("nope")).isNull();
			assertThat(context.getBean(NbdEndpoint.class).disconnect("mem", "42").getStatus()).isEqualTo(404);
		});
	}

	@Test
	void exportDetailsShowWhatAFileBackendUses(@TempDir Path dir) {
		this.runner
			.withPropertyValues("management.endpoints.web.exposure.include=nbd", "nbd.exports.disk.type=file",
					"nbd.exports.disk.size=1MB", "nbd.exports.disk.path=" + dir.resolve("disk.img"))
			.run((context) -> {
				NbdEndpoint.ExportDetails disk = context.getBean(NbdEndpoint.class).export("disk");
				assertThat(disk.backend()).containsEntry("type", "file")
					.containsEntry("path", dir.resolve("disk.img").toAbsolutePath().toString())
					.containsKeys("extents", "trim", "zero", "zeroNoHole", "fastZero", "fua", "fallback");
				// A backend that says nothing about itself.
				assertThat(context.getBean(NbdEndpoint.class).export("mem").backend()).isEmpty();
			});
	}

	@Test
	void noEndpointWhenNotExposed() {
		this.runner.run((context) -> assertThat(context).doesNotHaveBean(NbdEndpoint.class));
	}

	@Test
	void backsOffWithoutActuator() {
		this.runner.withPropertyValues("management.endpoints.web.exposure.include=nbd")
			.withClassLoader(new FilteredClassLoader(Endpoint.class))
			.run((context) -> assertThat(context).hasNotFailed().doesNotHaveBean(NbdEndpoint.class));
	}

	@Test
	void backsOffWithoutServer() {
		this.runner.withPropertyValues("management.endpoints.web.exposure.include=nbd", "nbd.server.enabled=false")
			.run((context) -> assertThat(context).hasNotFailed().doesNotHaveBean(NbdEndpoint.class));
	}

}
