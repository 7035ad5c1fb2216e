package dev.nbd.autoconfigure;

import org.springframework.boot.autoconfigure.AutoConfiguration;
import org.springframework.boot.autoconfigure.condition.ConditionalOnBean;
import org.springframework.boot.autoconfigure.condition.ConditionalOnBooleanProperty;
import org.springframework.boot.autoconfigure.condition.ConditionalOnClass;
import org.springframework.boot.autoconfigure.condition.ConditionalOnMissingBean;
import org.springframework.boot.health.autoconfigure.contributor.ConditionalOnEnabledHealthIndicator;
import org.springframework.boot.health.contributor.Health;
import org.springframework.boot.health.contributor.HealthIndicator;
import org.springframework.context.annotation.Bean;

import dev.nbd.server.NbdServer;

/**
 * The {@code nbd} health indicator (add it to the readiness group). With
 * {@code nbd.server.enabled=false} it is still there, UP with {@code enabled: false}, so a
 * readiness group that includes {@code nbd} keeps working when NBD is switched off.
 */
@AutoConfiguration(after = NbdServerAutoConfiguration.class)
@ConditionalOnClass({ HealthIndicator.class, ConditionalOnEnabledHealthIndicator.class })
@ConditionalOnEnabledHealthIndicator("nbd")
public final class NbdHealthContributorAutoConfiguration {

	@Bean
	@ConditionalOnBean(NbdServer.class)
	@ConditionalOnMissingBean(name = "nbdHealthIndicator")
	NbdHealthIndicator nbdHealthIndicator(NbdServer server) {
		return new NbdHealthIndicator(server);
	}

	@Bean("nbdHealthIndicator")
	@ConditionalOnBooleanProperty(name = "nbd.server.enabled", havingValue = false)
	@ConditionalOnMissingBean(name = "nbdHealthIndicator")
	HealthIndicator nbdDisabledHealthIndicator() {
		// Switched off on purpose: not a reason to take the instance out of service.
		Health health = Health.up().withDetail("enabled", false).build();
		return () -> health;
	}

}
