package dev.nbd.autoconfigure;

import java.util.HashMap;
import java.util.Map;

import org.springframework.context.ApplicationContextInitializer;
import org.springframework.context.ApplicationListener;
import org.springframework.context.ConfigurableApplicationContext;
import org.springframework.core.env.ConfigurableEnvironment;
import org.springframework.core.env.MapPropertySource;
import org.springframework.core.env.MutablePropertySources;
import org.springframework.core.env.PropertySource;

/**
 * Publishes the bound NBD port as {@code local.nbd.server.port} (in the {@code server.ports}
 * property source, like {@code local.server.port}), so tests using {@code nbd.server.port=0}
 * can find it with {@code @Value("${local.nbd.server.port}")} or {@link LocalNbdServerPort}.
 */
public class NbdPortInfoApplicationContextInitializer
		implements ApplicationContextInitializer<ConfigurableApplicationContext> {

	static final String PROPERTY = "local.nbd.server.port";

	@Override
	public void initialize(ConfigurableApplicationContext context) {
		context.addApplicationListener(new Listener(context));
	}

	private static final class Listener implements ApplicationListener<NbdServerInitializedEvent> {

		private final ConfigurableApplicationContext context;

		Listener(ConfigurableApplicationContext context) {
			this.context = context;
		}

		@Override
		public void onApplicationEvent(NbdServerInitializedEvent event) {
			setPort(this.context, event.getServer().port());
		}

		@SuppressWarnings("unchecked")
		private static void setPort(ConfigurableApplicationContext context, int port) {
			ConfigurableEnvironment env = context.getEnvironment();
			MutablePropertySources sources = env.getPropertySources();
			PropertySource<?> source = sources.get("server.ports");
			if (source == null) {
				source = new MapPropertySource("server.ports", new HashMap<>());
				sources.addFirst(source);
			}
			((Map<String, Object>) source.getSource()).put(PROPERTY, port);
			if (context.getParent() instanceof ConfigurableApplicationContext parent) {
				setPort(parent, port);
			}
		}

	}

}
