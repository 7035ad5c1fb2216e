package dev.nbd.sample;

import org.springframework.boot.SpringApplication;
import org.springframework.boot.autoconfigure.SpringBootApplication;
import org.springframework.context.annotation.Bean;

import dev.nbd.backend.ExportBackend;

/**
 * Serves {@code mem} and {@code disk} from application.properties and {@code scratch} from
 * code, on 127.0.0.1:10809, with actuator on 8080.
 */
@SpringBootApplication
public class SampleApplication {

	public static void main(String[] args) {
		SpringApplication.run(SampleApplication.class, args);
	}

	/** An export defined in code: any ExportBackend bean is served under its name. */
	@Bean
	ExportBackend scratch() {
		return new HeapExport("scratch", 64 * 1024 * 1024);
	}

}
