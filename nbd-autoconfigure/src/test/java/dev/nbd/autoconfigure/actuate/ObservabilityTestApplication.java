package dev.nbd.autoconfigure.actuate;

import org.springframework.boot.SpringBootConfiguration;
import org.springframework.boot.autoconfigure.EnableAutoConfiguration;
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
