-- Message templates (per-locale variants of one channel's content) and the snippets they render by name.
-- Liquid sources are checked on save (messaging/templates.py); `snippets` records the names a template or
-- snippet renders, so a snippet in use cannot be deleted and the sender loads only what a template needs.
CREATE TABLE templates (
    id                     uuid PRIMARY KEY DEFAULT lunogram_new_id(),
    project_id             uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    name                   text NOT NULL,
    channel                text NOT NULL CHECK (channel IN ('email', 'sms', 'push', 'inbox', 'whatsapp', 'webhook')),
    default_locale         text NOT NULL,
    subscription_group_id  uuid,                              -- the group a send checks (subscriptions)
    snippets               text[] NOT NULL DEFAULT '{}',      -- snippet names its variants render/include
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now(), -- with id, the key of parsed-template caches
    UNIQUE (project_id, name)
);
CREATE INDEX templates_project ON templates (project_id, created_at DESC, id DESC);

CREATE TABLE template_variants (
    template_id  uuid NOT NULL REFERENCES templates (id) ON DELETE CASCADE,
    locale       text NOT NULL,                               -- BCP 47, canonical case (pt-BR)
    content      jsonb NOT NULL,                              -- the channel's fields (subject, html, ...)
    PRIMARY KEY (template_id, locale)
);

CREATE TABLE snippets (
    id          uuid PRIMARY KEY DEFAULT lunogram_new_id(),
    project_id  uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    name        text NOT NULL,
    source      text NOT NULL,
    snippets    text[] NOT NULL DEFAULT '{}',                 -- snippet names this one renders/includes
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (project_id, name)
);
