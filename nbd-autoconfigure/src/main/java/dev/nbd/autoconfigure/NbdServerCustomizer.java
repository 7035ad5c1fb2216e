package dev.nbd.autoconfigure;

import dev.nbd.server.NbdServerConfig;

/**
 * Callback to adjust the server settings beyond what properties offer. Beans of this type are
 * applied in order before the server is created.
 */
@FunctionalInterface
public interface NbdServerCustomizer {

	void customize(NbdServerConfig.Builder builder);

}
