package dev.nbd.autoconfigure.actuate;

import org.springframework.boot.actuate.autoconfigure.endpoint.condition.ConditionalOnAvailableEndpoint;
import org.springframework.boot.actuate.endpoint.annotation.Endpoint;
import org.springframework.boot.autoconfigure.AutoConfiguration;
import org.springframework.boot.autoconfigure.condition.ConditionalOnBean;
import org.springframework.boot.autoconfigure.condition.ConditionalOnClass;
import org.springframework.boot.autoconfigure.condition.ConditionalOnMissingBean;
import org.springframework.context.annotation.Bean;

import dev.nbd.autoconfigure.NbdServerAutoConfiguration;
import dev.nbd.server.NbdServer;

/** The {@code nbd} actuator endpoint, when actuator is present and the endpoint is exposed. */
@AutoConfiguration(after = NbdServerAutoConfiguration.class)
@ConditionalOnClass({ Endpoint.class, ConditionalOnAvailableEndpoint.class })
@ConditionalOnBean(NbdServer.class)
@ConditionalOnAvailableEndpoint(NbdEndpoint.class)
public final class NbdEndpointAutoConfiguration {

	@Bean
	@ConditionalOnMissingBean
	NbdEndpoint nbdEndpoint(NbdServer server) {
		return new NbdEndpoint(server);
	}

}
