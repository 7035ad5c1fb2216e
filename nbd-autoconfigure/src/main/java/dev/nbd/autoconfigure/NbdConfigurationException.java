package dev.nbd.autoconfigure;

/**
 * A mistake in the NBD configuration found at startup, with what to do about it. Reported by
 * {@link NbdConfigurationFailureAnalyzer} as a Spring Boot failure analysis.
 */
public class NbdConfigurationException extends RuntimeException {

	private final String action;

	NbdConfigurationException(String description, String action) {
		this(description, action, null);
	}

	NbdConfigurationException(String description, String action, Throwable cause) {
		super(description, cause);
		this.action = action;
	}

	/** What the user should change. */
	public String getAction() {
		return this.action;
	}

}
