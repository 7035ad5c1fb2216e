package dev.nbd.autoconfigure;

import org.springframework.boot.autoconfigure.AutoConfiguration;
import org.springframework.boot.autoconfigure.condition.ConditionalOnBean;
import org.springframework.boot.autoconfigure.condition.ConditionalOnClass;
import org.springframework.boot.autoconfigure.condition.ConditionalOnMissingBean;
import org.springframework.boot.health.autoconfigure.contributor.ConditionalOnEnabledHealthIndicator;
import org.springframework.boot.health.contributor.HealthIndicator;
import org.springframework.context.annotation.Bean;

import dev.nbd.server.NbdServer;

/** The {@code nbd} health indicator (add it to the readiness group). */
@AutoConfiguration(after = NbdServerAutoConfiguration.class)
@ConditionalOnClass({ HealthIndicator.class, ConditionalOnEnabledHealthIndicator.class })
@ConditionalOnBean(NbdServer.class)
@ConditionalOnEnabledHealthIndicator("nbd")
public final class NbdHealthContributorAutoConfiguration {

	@Bean
	@ConditionalOnMissingBean(name = "nbdHealthIndicator")
	NbdHealthIndicator nbdHealthIndicator(NbdServer server) {
		return new NbdHealthIndicator(server);
	}

}
