package dev.nbd.autoconfigure;

import org.springframework.context.ApplicationEvent;

import dev.nbd.server.NbdServer;

/** Published once the NBD listener is bound. */
public class NbdServerInitializedEvent extends ApplicationEvent {

	public NbdServerInitializedEvent(NbdServer server) {
		super(server);
	}

	public NbdServer getServer() {
		return (NbdServer) getSource();
	}

}
