package dev.nbd.server;

/** How an export treats several connections from clients. */
public enum MultiConnMode {

	/**
	 * Advertise {@code NBD_FLAG_CAN_MULTI_CONN} exactly when the backend declares itself safe;
	 * otherwise each connection's FLUSH covers only its own view.
	 */
	AUTO,

	/**
	 * Advertise the flag even for an unsafe backend and make it true: every FLUSH, and every FUA
	 * write, flushes the views of all open connections of the export.
	 */
	EMULATE,

	/** Refuse a second simultaneous connection to the export ({@code NBD_REP_ERR_POLICY}). */
	SINGLE

}
