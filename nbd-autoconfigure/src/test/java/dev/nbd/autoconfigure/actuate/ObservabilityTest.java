package dev.nbd.autoconfigure.actuate;

import java.lang.annotation.ElementType;
import java.lang.annotation.Retention;
import java.lang.annotation.RetentionPolicy;
import java.lang.annotation.Target;

import org.springframework.boot.micrometer.metrics.test.autoconfigure.AutoConfigureMetrics;
import org.springframework.boot.test.context.SpringBootTest;

/**
 * {@link ObservabilityTestApplication} on random HTTP and NBD ports with the {@code nbd},
 * {@code prometheus} and {@code health} endpoints exposed and {@code nbd} in the readiness
 * group. One annotation, so the test classes share one cached context.
 */
@Target(ElementType.TYPE)
@Retention(RetentionPolicy.RUNTIME)
@SpringBootTest(classes = ObservabilityTestApplication.class, webEnvironment = SpringBootTest.WebEnvironment.RANDOM_PORT,
		properties = { "nbd.server.port=0", "management.endpoints.web.exposure.include=health,prometheus,nbd",
				"management.endpoint.health.probes.enabled=true",
				"management.endpoint.health.group.readiness.include=readinessState,nbd",
				"management.endpoint.health.group.readiness.show-components=always" })
@AutoConfigureMetrics
@interface ObservabilityTest {

}
