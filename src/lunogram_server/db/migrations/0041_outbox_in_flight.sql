-- Marketing messages on their way (marked `sending`, not yet answered), by user and channel: frequency caps
-- count them with those already sent (messaging/sql/outbox.sql sent_recently), so that two senders, or a
-- batch decided while an earlier one is still sending, cannot together go past a cap. Small: a message is
-- in it only while its send is in flight.
CREATE INDEX message_outbox_in_flight ON message_outbox (user_id, channel)
    WHERE status = 'sending' AND marketing AND sent_at IS NULL;
