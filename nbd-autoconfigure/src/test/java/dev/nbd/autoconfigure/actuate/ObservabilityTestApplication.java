package dev.nbd.autoconfigure.actuate;

import org.springframework.boot.SpringBootConfiguration;
import org.springframework.boot.autoconfigure.EnableAutoConfiguration;
import org.springframework.boot.builder.SpringApplicationBuilder;
import org.springframework.context.ConfigurableApplicationContext;
import org.springframework.context.annotation.Bean;

import dev.nbd.backend.ExportBackend;
import dev.nbd.backend.MemoryBackend;
import dev.nbd.testsupport.GatedBackend;

/**
 * A tiny application for the observability tests: export {@code mem} (memory) and export
 * {@code slow}, whose requests wait while the test holds its {@link Gate} closed, so requests can
 * be held in flight.
 */
@SpringBootConfiguration(proxyBeanMethods = false)
@EnableAutoConfiguration
class ObservabilityTestApplication {

	/**
	 * Runs the application on its own, with the properties of {@link ObservabilityTest}, for
	 * tests that stop the server or disturb its counters (the context cached for the other
	 * classes must not see that).
	 */
	static ConfigurableApplicationContext startAlone() {
		return new SpringApplicationBuilder(ObservabilityTestApplication.class).registerShutdownHook(false)
			.properties("server.port=0", "nbd.server.port=0", "management.endpoints.web.exposure.include=health,nbd",
					"management.endpoint.health.probes.enabled=true",
					"management.endpoint.health.group.readiness.include=readinessState,nbd",
					"management.endpoint.health.group.readiness.show-components=always")
			.run();
	}

	static int httpPort(ConfigurableApplicationContext context) {
		return context.getEnvironment().getRequiredProperty("local.server.port", Integer.class);
	}

	static int nbdPort(ConfigurableApplicationContext context) {
		return context.getEnvironment().getRequiredProperty("local.nbd.server.port", Integer.class);
	}

	@Bean
	ExportBackend mem() {
		return new MemoryBackend("mem", 16 * 1024 * 1024);
	}

	@Bean
	Gate slow() {
		return new Gate();
	}

	/** Export {@code slow}: 1 MiB whose requests wait while the test holds the gate closed. Open by default. */
	static final class Gate extends GatedBackend {

		Gate() {
			super("slow", 1024 * 1024);
		}

	}

}
