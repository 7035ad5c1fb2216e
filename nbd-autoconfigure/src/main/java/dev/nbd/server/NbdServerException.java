package dev.nbd.server;

/** The server could not start (for example, its port is in use). */
public class NbdServerException extends RuntimeException {

	private final int port;

	public NbdServerException(String message, int port, Throwable cause) {
		super(message, cause);
		this.port = port;
	}

	/** Port the server tried to bind. */
	public int port() {
		return this.port;
	}

}
