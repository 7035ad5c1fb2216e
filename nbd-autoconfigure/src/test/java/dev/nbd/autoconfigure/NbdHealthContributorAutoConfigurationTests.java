package dev.nbd.autoconfigure;

import org.junit.jupiter.api.Test;
import org.springframework.boot.autoconfigure.AutoConfigurations;
import org.springframework.boot.autoconfigure.ssl.SslAutoConfiguration;
import org.springframework.boot.health.actuate.endpoint.HealthEndpoint;
import org.springframework.boot.health.autoconfigure.actuate.endpoint.HealthEndpointAutoConfiguration;
import org.springframework.boot.health.autoconfigure.contributor.HealthContributorAutoConfiguration;
import org.springframework.boot.health.autoconfigure.registry.HealthContributorRegistryAutoConfiguration;
import org.springframework.boot.health.contributor.HealthIndicator;
import org.springframework.boot.health.contributor.Status;
import org.springframework.boot.test.context.runner.ApplicationContextRunner;

import static org.assertj.core.api.Assertions.assertThat;

class NbdHealthContributorAutoConfigurationTests {

	private final ApplicationContextRunner runner = new ApplicationContextRunner()
		.withConfiguration(AutoConfigurations.of(NbdServerAutoConfiguration.class, SslAutoConfiguration.class,
				NbdHealthContributorAutoConfiguration.class, HealthContributorAutoConfiguration.class,
				HealthContributorRegistryAutoConfiguration.class, HealthEndpointAutoConfiguration.class))
		.withPropertyValues("nbd.server.port=0", "management.endpoint.health.group.readiness.include=nbd");

	@Test
	void readinessGroupWithNbdStartsWhenTheServerIsDisabled() {
		this.runner.withPropertyValues("nbd.server.enabled=false").run((context) -> {
			assertThat(context).hasNotFailed();
			HealthIndicator nbd = context.getBean("nbdHealthIndicator", HealthIndicator.class);
			assertThat(nbd.health().getStatus()).isEqualTo(Status.UP);
			assertThat(nbd.health().getDetails()).containsEntry("enabled", false);
			assertThat(context.getBean(HealthEndpoint.class).healthForPath("nbd")).isNotNull();
		});
	}

	@Test
	void indicatorFollowsTheListenerWhenEnabled() {
		this.runner.run((context) -> {
			assertThat(context).hasNotFailed();
			assertThat(context.getBean("nbdHealthIndicator")).isInstanceOf(NbdHealthIndicator.class);
			assertThat(context.getBean(NbdHealthIndicator.class).health().getStatus()).isEqualTo(Status.UP);
		});
	}

}
